// All role assignments for the stamp, each the least role the caller needs on the narrowest resource it touches
// (tests/unit/test_bicep_policy.py refuses owner/admin roles and assignments above the resource):
//  - Function app identity (user-assigned):
//      Storage Blob Data Contributor + Storage Blob Delegator on the account: tenant-<id> containers are created at
//        run time, so no narrower scope exists; the delegator role signs the user-delegation SAS of upload URLs.
//      Storage Queue Data Contributor on the account: the Functions host's storage (AzureWebJobsStorage__queueServiceUri).
//      Service Bus Data Sender + Data Receiver on the `shards` queue only (not the namespace; no Manage right).
//      EventGrid Data Sender + EventGrid EventSubscription Contributor on the domain: publish, and create or delete
//        a tenant's subscriptions (its domain topic appears with the first and goes with the last).
//      Monitoring Metrics Publisher on Application Insights (Entra ID ingestion).
//      Key Vault Secrets Officer on the stamp's vault only: tenants' remote-model credentials (written at
//        registration, read at load; Secrets User cannot write).
//      Cosmos DB Built-in Data Reader (SQL RBAC) on the `aiaas` database, Data Contributor on each of its
//        containers but `audit`, and on `audit` a custom role that can create, read and query items and nothing
//        else: no path deletes or changes an entry.
//      Storage Blob Data Contributor on the platform account's `models` container only, and no Blob Delegator
//        there: the app reads and publishes models but can sign no SAS that names the platform's data.
//      Storage Blob Data Reader on the platform account's `deadletter` container only: it reads dead letters back
//        for their tenant (GET .../deadletters) and can neither change nor delete one.
//  - Event Grid domain identity (system-assigned): Storage Blob Data Contributor on the platform account's
//    `deadletter` container only (tenant subscriptions dead-letter with deadLetterWithResourceIdentity; webhook
//    delivery needs no role).
//  - Event Grid system topic identity (system-assigned): Storage Blob Data Contributor on the same `deadletter`
//    container only (BlobCreated dead letters; delivery to the function needs no storage role).
//  - Optional developer/operator principal: the same data roles as the app.
param storageAccountName string
param platformStorageAccountName string
param modelsContainerName string = 'models'
param serviceBusNamespaceName string
param serviceBusQueueName string = 'shards'
param eventGridDomainName string
param cosmosAccountName string
param cosmosDatabaseName string = 'aiaas'
@description('The containers the app reads and writes (all but the audit log).')
param cosmosContainerNames array
param cosmosAuditContainerName string = 'audit'
param applicationInsightsName string
param keyVaultName string
param deadLetterContainerName string = 'deadletter'

@description('Principal id of the function app user-assigned identity.')
param functionPrincipalId string

@description('Principal id of the Event Grid system topic system-assigned identity.')
param systemTopicPrincipalId string

@description('Principal id of the Event Grid domain system-assigned identity.')
param domainPrincipalId string

@description('Optional principal (user or group) that gets the same data roles as the app. Leave empty to skip.')
param userPrincipalId string = ''

@allowed(['User', 'Group', 'ServicePrincipal'])
param userPrincipalType string = 'User'

// Built-in role definition ids
var roles = {
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageBlobDelegator: 'db58b8e5-c6ad-4a2a-8342-4190687cbf4a'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7'
  eventGridEventSubscriptionContributor: '428e0ff0-5e57-4d9c-a221-2c70d0e0a443'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
}

// Cosmos DB Built-in Data Contributor (data-plane SQL role, not an Azure RBAC role)
var cosmosDataContributorRoleId = '00000000-0000-0000-0000-000000000002'
// Cosmos DB Built-in Data Reader: metadata, reads and queries, no writes
var cosmosDataReaderRoleId = '00000000-0000-0000-0000-000000000001'

var storageDataRoles = [
  roles.storageBlobDataContributor
  roles.storageQueueDataContributor
  roles.storageBlobDelegator
]

var queueDataRoles = [
  roles.serviceBusDataSender
  roles.serviceBusDataReceiver
]

var domainRoles = [
  roles.eventGridDataSender
  roles.eventGridEventSubscriptionContributor
]

var assignUser = !empty(userPrincipalId)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource platformStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: platformStorageAccountName

  resource blobServices 'blobServices' existing = {
    name: 'default'

    resource modelsContainer 'containers' existing = {
      name: modelsContainerName
    }

    resource deadLetterContainer 'containers' existing = {
      name: deadLetterContainerName
    }
  }
}

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' existing = {
  name: serviceBusNamespaceName

  resource queue 'queues' existing = {
    name: serviceBusQueueName
  }
}

resource eventGridDomain 'Microsoft.EventGrid/domains@2025-02-15' existing = {
  name: eventGridDomainName
}

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' existing = {
  name: cosmosAccountName

  resource database 'sqlDatabases' existing = {
    name: cosmosDatabaseName
  }
}

// Cosmos DB Built-in Data Contributor
resource cosmosDataContributorRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions@2024-05-15' existing = {
  parent: cosmos
  name: cosmosDataContributorRoleId
}

resource cosmosDataReaderRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions@2024-05-15' existing = {
  parent: cosmos
  name: cosmosDataReaderRoleId
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// Role assignment calls stay on one line: checkov's Bicep parser refuses a call split over lines.

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

resource functionModelsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(platformStorage::blobServices::modelsContainer.id, functionPrincipalId, roles.storageBlobDataContributor)
  scope: platformStorage::blobServices::modelsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Reads only: dead letters are Event Grid's record of what was not delivered, never the app's to change.
resource functionDeadLetterReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(platformStorage::blobServices::deadLetterContainer.id, functionPrincipalId, roles.storageBlobDataReader)
  scope: platformStorage::blobServices::deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource functionQueueRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in queueDataRoles: {
    name: guid(serviceBus::queue.id, functionPrincipalId, roleId)
    scope: serviceBus::queue
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: functionPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

resource functionDomainRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in domainRoles: {
    name: guid(eventGridDomain.id, functionPrincipalId, roleId)
    scope: eventGridDomain
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: functionPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

resource functionMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, functionPrincipalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Secrets Officer, not Secrets User: registering a tenant's remote model writes its credential (set, and recover
// after a delete under purge protection); on this vault only, which holds nothing but those credentials.
resource functionKeyVaultSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, functionPrincipalId, roles.keyVaultSecretsOfficer)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Reads on the database itself: the SDK reads the database's metadata at start (create-if-not-exists reads
// first), which container-scoped roles do not cover. Reads only, so the audit log stays append-only.
resource functionCosmosDataReader 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = {
  parent: cosmos
  name: guid(cosmos::database.id, functionPrincipalId, cosmosDataReaderRoleId)
  properties: {
    roleDefinitionId: cosmosDataReaderRole.id
    principalId: functionPrincipalId
    scope: '${cosmos.id}/dbs/${cosmosDatabaseName}'
  }
}

// Cosmos DB processes one SQL role assignment write at a time per account: one after the other.
@batchSize(1)
resource functionCosmosDataContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = [
  for containerName in cosmosContainerNames: {
    parent: cosmos
    name: guid(cosmos::database.id, containerName, functionPrincipalId, cosmosDataContributorRoleId)
    properties: {
      roleDefinitionId: cosmosDataContributorRole.id
      principalId: functionPrincipalId
      // A SQL role assignment's scope is the account-relative path of the container.
      scope: '${cosmos.id}/dbs/${cosmosDatabaseName}/colls/${containerName}'
    }
    dependsOn: [
      functionCosmosDataReader
    ]
  }
]

// The audit log is append-only for the app: create, read and query; no replace, upsert, patch or delete
// (Cosmos DB data-plane actions: https://learn.microsoft.com/azure/cosmos-db/nosql/security/reference-data-plane-actions).
resource auditAppenderRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions@2024-05-15' = {
  parent: cosmos
  name: guid(cosmos::database.id, cosmosAuditContainerName, 'audit-appender')
  properties: {
    roleName: 'AIaaS audit appender'
    type: 'CustomRole'
    assignableScopes: [
      '${cosmos.id}/dbs/${cosmosDatabaseName}/colls/${cosmosAuditContainerName}'
    ]
    permissions: [
      {
        dataActions: [
          'Microsoft.DocumentDB/databaseAccounts/readMetadata'
          'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/create'
          'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/read'
          'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/executeQuery'
        ]
      }
    ]
  }
}

resource functionAuditAppender 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = {
  parent: cosmos
  name: guid(cosmos::database.id, cosmosAuditContainerName, functionPrincipalId, 'audit-appender')
  properties: {
    roleDefinitionId: auditAppenderRole.id
    principalId: functionPrincipalId
    scope: '${cosmos.id}/dbs/${cosmosDatabaseName}/colls/${cosmosAuditContainerName}'
  }
  dependsOn: [
    functionCosmosDataContributor
  ]
}

// ---------------------------------------------------------------- Event Grid identities (dead letters)

resource domainDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(platformStorage::blobServices::deadLetterContainer.id, domainPrincipalId, roles.storageBlobDataContributor)
  scope: platformStorage::blobServices::deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: domainPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource systemTopicDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(platformStorage::blobServices::deadLetterContainer.id, systemTopicPrincipalId, roles.storageBlobDataContributor)
  scope: platformStorage::blobServices::deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
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

resource userModelsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignUser) {
  name: guid(platformStorage::blobServices::modelsContainer.id, userPrincipalId, roles.storageBlobDataContributor)
  scope: platformStorage::blobServices::modelsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

resource userDeadLetterReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignUser) {
  name: guid(platformStorage::blobServices::deadLetterContainer.id, userPrincipalId, roles.storageBlobDataReader)
  scope: platformStorage::blobServices::deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

resource userQueueRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in (assignUser ? queueDataRoles : []): {
    name: guid(serviceBus::queue.id, userPrincipalId, roleId)
    scope: serviceBus::queue
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: userPrincipalId
      principalType: userPrincipalType
    }
  }
]

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
  name: guid(cosmos::database.id, userPrincipalId, cosmosDataContributorRoleId)
  properties: {
    roleDefinitionId: cosmosDataContributorRole.id
    principalId: userPrincipalId
    scope: '${cosmos.id}/dbs/${cosmosDatabaseName}'
  }
  dependsOn: [
    functionAuditAppender
  ]
}
