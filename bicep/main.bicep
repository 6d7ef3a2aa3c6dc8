// AIaaS batch inference platform: one regional stamp, identity-only.
//
// Deploy (subscription scope; creates the resource group):
//   az deployment sub create -l <region> -f bicep/main.bicep -p environmentName=<env> location=<region>
// or through azd with bicep/main.parameters.json.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment; used for the resource group name and to generate a unique token for resource names.')
param environmentName string

@minLength(1)
@description('Primary location for all resources.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Optional object id of a developer/operator principal that gets the same data-plane roles as the app. Leave empty to skip.')
param principalId string = ''

@allowed(['User', 'Group', 'ServicePrincipal'])
@description('Principal type of principalId.')
param principalType string = 'User'

@description('true: Cosmos DB serverless. false: provisioned autoscale throughput (cosmosAutoscaleMaxThroughput).')
param cosmosServerless bool = true

@minValue(1000)
@description('Autoscale max RU/s shared by the aiaas database when cosmosServerless is false.')
param cosmosAutoscaleMaxThroughput int = 1000

@description('Create the BlobCreated -> ingest_blob event subscription. Event Grid validates the Azure Functions endpoint, so set this to true only after the function code has been deployed (for azd: deploy, then provision again).')
param deployBlobEventSubscription bool = false

@description('Optional resource group name override.')
param resourceGroupName string = ''

@description('The region this stamp serves (AIAAS_REGION); defaults to the deployment location.')
param region string = location

@description('The global tenant directory (global.bicep outputs): its Cosmos DB account, resource group and endpoint.')
param directoryAccountName string
param directoryResourceGroupName string
param directoryEndpoint string

@secure()
@minLength(32)
@description('The relay key (AIAAS_RELAY_KEY, kept in the stamp\'s vault): from the azd environment (AZURE_RELAY_KEY), set once and kept; a new value breaks every callback subscription until it is recreated.')
param relayKey string

@description('Optional container registry (name, resource group) whose labelled images are models (AIAAS_CONTAINER_REGISTRY_URL): the app gets AcrPull on it. Empty: no container models.')
param containerRegistryName string = ''
param containerRegistryResourceGroupName string = ''

@description('Email address that receives the operator alerts (modules/alerts.bicep). Empty: alerts show in the portal only.')
param alertEmail string = ''

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  workload: 'aiaas'
}

// Fixed names the app relies on
var modelsContainerName = 'models'
var deadLetterContainerName = 'deadletter'
var deploymentContainerName = 'deployments'
var cosmosDatabaseName = 'aiaas'
var jobQueueName = 'shards'
var ingestFunctionName = 'ingest_blob'

var functionAppName = '${abbrs.webSitesFunctions}${resourceToken}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}func-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    containerNames: [
      deploymentContainerName
    ]
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
    // The web console (/console) PUTs uploads to the tenants' account from the function app's own host.
    corsOrigins: [
      'https://${functionAppName}.azurewebsites.net'
    ]
  }
}

// The platform's own data (the models container: public models and every tenant's private ones) in an account of
// its own: a tenant's upload SAS is signed for the tenants' account, so it can never name a blob here, as a path, a
// copy source or a copy destination; and the app identity holds no Blob Delegator role here, so no SAS for this
// account can be signed at all. Every dead letter lands here too (`deadletter`): Event Grid writes with the domain's
// and the system topic's identities, the app only reads.
module platformStorage 'modules/storage.bicep' = {
  name: 'platform-storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}p${resourceToken}'
    location: location
    tags: tags
    containerNames: [
      modelsContainerName
      deadLetterContainerName
    ]
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

// Tenants' remote-model credentials (never in a blob): the app reads and writes them with its identity only.
module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    relayKey: relayKey
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

// Log alerts an operator must hear about (dead letters, job failure rate per model, drift, quotas, function errors).
module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    logAnalyticsName: monitoring.outputs.logAnalyticsName
    location: location
    tags: tags
    namePrefix: environmentName
    alertEmail: alertEmail
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'servicebus'
  scope: rg
  params: {
    name: '${abbrs.serviceBusNamespaces}${resourceToken}'
    location: location
    tags: tags
    queueName: jobQueueName
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  scope: rg
  params: {
    name: '${abbrs.documentDBDatabaseAccounts}${resourceToken}'
    location: location
    tags: tags
    databaseName: cosmosDatabaseName
    serverless: cosmosServerless
    autoscaleMaxThroughput: cosmosAutoscaleMaxThroughput
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module eventGridDomain 'modules/eventgrid-domain.bicep' = {
  name: 'eventgrid-domain'
  scope: rg
  params: {
    name: '${abbrs.eventGridDomains}${resourceToken}'
    location: location
    tags: tags
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module systemTopic 'modules/eventgrid-systemtopic.bicep' = {
  name: 'eventgrid-systemtopic'
  scope: rg
  params: {
    name: '${abbrs.eventGridSystemTopics}storage-${resourceToken}'
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    platformStorageAccountName: platformStorage.outputs.name
    platformStorageAccountId: platformStorage.outputs.resourceId
    deploymentContainerName: deploymentContainerName
    modelsContainerName: modelsContainerName
    containerRegistryUrl: empty(containerRegistryName) ? '' : 'https://${containerRegistryName}${environment().suffixes.acrLoginServer}'
    deadLetterContainerName: deadLetterContainerName
    applicationInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
    cosmosEndpoint: cosmos.outputs.endpoint
    cosmosDatabaseName: cosmos.outputs.databaseName
    serviceBusFullyQualifiedNamespace: serviceBus.outputs.fullyQualifiedNamespace
    serviceBusQueueName: serviceBus.outputs.queueName
    eventGridDomainEndpoint: eventGridDomain.outputs.endpoint
    eventGridDomainId: eventGridDomain.outputs.resourceId
    keyVaultUri: keyVault.outputs.vaultUri
    relayKeySecretUri: keyVault.outputs.relayKeySecretUri
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
    region: region
    directoryEndpoint: directoryEndpoint
  }
}

// The stamp reads the global directory (which stamp serves a tenant) and can never write it.
module directoryReader 'modules/directory-reader.bicep' = {
  name: 'directory-reader-${region}'
  scope: resourceGroup(directoryResourceGroupName)
  params: {
    directoryAccountName: directoryAccountName
    functionPrincipalId: identity.outputs.principalId
  }
}

module acrPull 'modules/acr-pull.bicep' = if (!empty(containerRegistryName)) {
  name: 'acr-pull-${region}'
  scope: resourceGroup(empty(containerRegistryResourceGroupName) ? rg.name : containerRegistryResourceGroupName)
  params: {
    containerRegistryName: containerRegistryName
    functionPrincipalId: identity.outputs.principalId
  }
}

// Consolidated role assignments
module rbac 'modules/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    platformStorageAccountName: platformStorage.outputs.name
    modelsContainerName: modelsContainerName
    serviceBusNamespaceName: serviceBus.outputs.name
    serviceBusQueueName: serviceBus.outputs.queueName
    eventGridDomainName: eventGridDomain.outputs.name
    cosmosAccountName: cosmos.outputs.name
    cosmosDatabaseName: cosmos.outputs.databaseName
    cosmosContainerNames: cosmos.outputs.writableContainerNames
    cosmosAuditContainerName: cosmos.outputs.auditContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    functionPrincipalId: identity.outputs.principalId
    systemTopicPrincipalId: systemTopic.outputs.principalId
    domainPrincipalId: eventGridDomain.outputs.principalId
    deadLetterContainerName: deadLetterContainerName
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

// BlobCreated (tenant inbox uploads) -> ingest_blob. Needs the function code deployed first and the
// system topic's dead-letter role in place.
module blobEventSubscription 'modules/blob-event-subscription.bicep' = if (deployBlobEventSubscription) {
  name: 'blob-event-subscription'
  scope: rg
  dependsOn: [
    rbac
  ]
  params: {
    systemTopicName: systemTopic.outputs.name
    functionAppName: functionApp.outputs.name
    functionName: ingestFunctionName
    deadLetterStorageAccountName: platformStorage.outputs.name
    deadLetterContainerName: deadLetterContainerName
  }
}

// ---------------------------------------------------------------- outputs
// azd writes these into the environment's .env; names mirror the app settings where one exists.

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output RESOURCE_TOKEN string = resourceToken

output AZURE_CLIENT_ID string = identity.outputs.clientId
output AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output AZURE_FUNCTION_IDENTITY_NAME string = identity.outputs.name

output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_API_NAME string = functionApp.outputs.name
output SERVICE_API_BASE_URL string = functionApp.outputs.baseUrl
output AIAAS_PUBLIC_API_URL string = functionApp.outputs.publicApiUrl

output AIAAS_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AIAAS_PLATFORM_STORAGE_ACCOUNT_NAME string = platformStorage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.primaryBlobEndpoint
output AZURE_STORAGE_QUEUE_ENDPOINT string = storage.outputs.primaryQueueEndpoint
output AIAAS_MODELS_CONTAINER string = modelsContainerName
// Every dead letter (tenant subscriptions' and BlobCreated's), in the platform account.
output AIAAS_DEADLETTER_CONTAINER string = deadLetterContainerName
output AIAAS_PLATFORM_STORAGE_ACCOUNT_ID string = platformStorage.outputs.resourceId

output AIAAS_COSMOS_ENDPOINT string = cosmos.outputs.endpoint
output AIAAS_COSMOS_DATABASE string = cosmos.outputs.databaseName
output AZURE_COSMOS_ACCOUNT_NAME string = cosmos.outputs.name

output AIAAS_JOB_QUEUE_BACKEND string = 'servicebus'
output AIAAS_JOB_QUEUE_NAME string = serviceBus.outputs.queueName
output AIAAS_SERVICEBUS_NAMESPACE string = serviceBus.outputs.fullyQualifiedNamespace
output AZURE_SERVICEBUS_NAMESPACE_NAME string = serviceBus.outputs.name

output AIAAS_EVENTGRID_ENDPOINT string = eventGridDomain.outputs.endpoint
output AIAAS_EVENTGRID_DOMAIN_ID string = eventGridDomain.outputs.resourceId
output AZURE_EVENTGRID_DOMAIN_NAME string = eventGridDomain.outputs.name
output AZURE_EVENTGRID_SYSTEM_TOPIC_NAME string = systemTopic.outputs.name
output BLOB_EVENT_SUBSCRIPTION_DEPLOYED bool = deployBlobEventSubscription

output AIAAS_REGION string = region
output AIAAS_DIRECTORY_ENDPOINT string = directoryEndpoint
output AIAAS_KEYVAULT_URL string = keyVault.outputs.vaultUri
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output AZURE_LOG_ANALYTICS_NAME string = monitoring.outputs.logAnalyticsName
