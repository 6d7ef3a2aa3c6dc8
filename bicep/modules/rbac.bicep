// All role assignments for the stamp.
//  - Function app identity (user-assigned): data roles on storage, Service Bus, Event Grid domain,
//    Cosmos DB (SQL RBAC) and Application Insights.
//  - Event Grid system topic identity (system-assigned): blob writes for dead-lettering.
//  - Optional developer/operator principal: the same data roles as the app.
param storageAccountName string
param serviceBusNamespaceName string
param eventGridDomainName string
param cosmosAccountName string
param applicationInsightsName string

@description('Principal id of the function app user-assigned identity.')
param functionPrincipalId string

@description('Principal id of the Event Grid system topic system-assigned identity.')
param systemTopicPrincipalId string

@description('Optional principal (user or group) that gets the same data roles as the app. Leave empty to skip.')
param userPrincipalId string = ''

@allowed(['User', 'Group', 'ServicePrincipal'])
param userPrincipalType string = 'User'

// Built-in role definition ids
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageBlobDelegator: 'db58b8e5-c6ad-4a2a-8342-4190687cbf4a'
  serviceBusDataOwner: '090c5cfd-751d-490a-894a-3ce6f1109419'
  eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7'
  eventGridContributor: '1e241071-0855-49ea-94dc-649edcd759de'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

// Cosmos DB Built-in Data Contributor (data-plane SQL role, not an Azure RBAC role)
var cosmosDataContributorRoleId = '00000000-0000-0000-0000-000000000002'

var storageDataRoles = [
  roles.storageBlobDataOwner
  roles.storageQueueDataContributor
  roles.storageBlobDelegator
]

var assignUser = !empty(userPrincipalId)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' existing = {
  name: serviceBusNamespaceName
}

resource eventGridDomain 'Microsoft.EventGrid/domains@2022-06-15' existing = {
  name: eventGridDomainName
}

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' existing = {
  name: cosmosAccountName
}

// Cosmos DB Built-in Data Contributor
resource cosmosDataContributorRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions@2024-05-15' existing = {
  parent: cosmos
  name: cosmosDataContributorRoleId
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// ---------------------------------------------------------------- function app identity

resource functionStorageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in storageDataRoles: {
    name: guid(storage.id, functionPrincipalId, roleId)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: functionPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

resource functionServiceBusDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(serviceBus.id, functionPrincipalId, roles.serviceBusDataOwner)
  scope: serviceBus
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataOwner)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource functionEventGridDataSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(eventGridDomain.id, functionPrincipalId, roles.eventGridDataSender)
  scope: eventGridDomain
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Lets the app create/delete per-tenant event subscriptions (and thus domain topics) on the domain.
resource functionEventGridContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(eventGridDomain.id, functionPrincipalId, roles.eventGridContributor)
  scope: eventGridDomain
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridContributor)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource functionMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, functionPrincipalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      roles.monitoringMetricsPublisher
    )
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource functionCosmosDataContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = {
  parent: cosmos
  name: guid(cosmos.id, functionPrincipalId, cosmosDataContributorRoleId)
  properties: {
    roleDefinitionId: cosmosDataContributorRole.id
    principalId: functionPrincipalId
    scope: cosmos.id
  }
}

// ---------------------------------------------------------------- Event Grid system topic identity

resource systemTopicDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, systemTopicPrincipalId, roles.storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      roles.storageBlobDataContributor
    )
    principalId: systemTopicPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------- optional developer / operator

resource userStorageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in (assignUser ? storageDataRoles : []): {
    name: guid(storage.id, userPrincipalId, roleId)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: userPrincipalId
      principalType: userPrincipalType
    }
  }
]

resource userServiceBusDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignUser) {
  name: guid(serviceBus.id, userPrincipalId, roles.serviceBusDataOwner)
  scope: serviceBus
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataOwner)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

resource userEventGridDataSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignUser) {
  name: guid(eventGridDomain.id, userPrincipalId, roles.eventGridDataSender)
  scope: eventGridDomain
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

// Cosmos DB processes one SQL role assignment write at a time per account: serialize after the app's.
resource userCosmosDataContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = if (assignUser) {
  parent: cosmos
  name: guid(cosmos.id, userPrincipalId, cosmosDataContributorRoleId)
  properties: {
    roleDefinitionId: cosmosDataContributorRole.id
    principalId: userPrincipalId
    scope: cosmos.id
  }
  dependsOn: [
    functionCosmosDataContributor
  ]
}
