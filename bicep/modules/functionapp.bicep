// Flex Consumption (FC1) plan + Python function app running as a user-assigned managed identity.
// Every connection is identity-based: no storage keys, SAS connection strings or Service Bus keys.
param name string
param planName string
param location string
param tags object = {}

@description('Resource id of the user-assigned managed identity the app runs as.')
param identityId string
@description('Client id of the user-assigned managed identity (AZURE_CLIENT_ID and the *__clientId settings).')
param identityClientId string

param storageAccountName string
@description('The platform\'s own storage account (the models container), apart from the tenants\' one.')
param platformStorageAccountName string
@description('Resource id of the platform storage account: Event Grid dead-letters tenant subscriptions into its deadletter container.')
param platformStorageAccountId string
param deploymentContainerName string = 'deployments'
param modelsContainerName string = 'models'
@description('Login server URL of the container registry whose labelled images are models (AIAAS_CONTAINER_REGISTRY_URL), https://<name>.azurecr.io; the app identity needs AcrPull there. Empty: none.')
param containerRegistryUrl string = ''
param deadLetterContainerName string = 'deadletter'

param applicationInsightsConnectionString string

param cosmosEndpoint string
param cosmosDatabaseName string = 'aiaas'

@description('The region this stamp serves (AIAAS_REGION): tenants homed here are served, others answer 421 WrongRegion.')
param region string
@description('Endpoint of the global tenant directory\'s Cosmos DB account (global.bicep), read-only for the stamp.')
param directoryEndpoint string
param directoryDatabaseName string = 'aiaas-global'

@description('Service Bus FQDN, e.g. <ns>.servicebus.windows.net')
param serviceBusFullyQualifiedNamespace string
param serviceBusQueueName string = 'shards'

param eventGridDomainEndpoint string
param eventGridDomainId string

@description('URI of the stamp\'s Key Vault (tenants\' remote-model credentials), e.g. https://<vault>.vault.azure.net/')
param keyVaultUri string
@description('Versionless URI of the relay key secret in the stamp\'s vault (keyvault.bicep), read through a Key Vault reference.')
param relayKeySecretUri string

@description('Hosts a Logic Apps callback URL may name, comma-separated, each a host or a .suffix (AIAAS_CALLBACK_HOSTS).')
param callbackHosts string = '.logic.azure.com'

@description('Retraining in Azure ML: the workspace\'s resource id (AIAAS_AZUREML_WORKSPACE_ID); empty: no retraining (AIAAS_TRAINER none).')
param azureMlWorkspaceId string = ''

@description('The Azure ML compute cluster training jobs run on (AIAAS_AZUREML_COMPUTE); its identity reads the tenants\' and platform accounts.')
param azureMlCompute string = ''

@description('The Azure ML environment (azureml:<name>:<version>) carrying this repo and its dev dependencies (AIAAS_AZUREML_ENVIRONMENT).')
param azureMlEnvironment string = ''

@description('Application ID URI (or client id) that Entra ID access tokens for the API carry as aud; empty: tokens are refused, API keys only (AIAAS_ENTRA_AUDIENCE).')
param entraAudience string = ''

param pythonVersion string = '3.11'

@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Shards in flight (queued or running) for one tenant: its share of the fleet (AIAAS_TENANT_MAX_SHARDS_IN_FLIGHT).')
@minValue(1)
param tenantMaxShardsInFlight int = 25

@description('Log Analytics workspace that receives the diagnostic settings.')
param logAnalyticsWorkspaceId string

var storageSuffix = environment().suffixes.storage
// host.json runs one shard per instance at a time (serviceBus.maxConcurrentCalls 1): the fleet's capacity.
var maxShardsInFlight = maximumInstanceCount
var blobServiceUri = 'https://${storageAccountName}.blob.${storageSuffix}'
var queueServiceUri = 'https://${storageAccountName}.queue.${storageSuffix}'

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:zone-redundant Flex Consumption is not offered in every region; the failure unit is the regional stamp
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222:the HTTP API is public by design; callers authenticate with API keys or Entra ID tokens (shared/api/auth)
  // checkov:skip=CKV_AZURE_17:tenants authenticate with bearer tokens, not client certificates
  // checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero per demand; Event Grid and Service Bus retry while instances start
  // checkov:skip=CKV_AZURE_213:Flex Consumption has no App Service health check; the pipeline's smoke test calls the public contract
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Key Vault references (AIAAS_RELAY_KEY) resolve with the user-assigned identity: the app has no other.
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobServiceUri}/${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }

  // No publishing credentials (basic auth) for FTP or SCM/zip deploy: deployments use Entra ID.
  resource ftpCredentials 'basicPublishingCredentialsPolicies' = {
    name: 'ftp'
    properties: {
      allow: false
    }
  }

  resource scmCredentials 'basicPublishingCredentialsPolicies' = {
    name: 'scm'
    properties: {
      allow: false
    }
  }
}

// App settings live in a separate config resource so they can reference the site's default host name.
// Flex Consumption sets the worker runtime from functionAppConfig.runtime: FUNCTIONS_WORKER_RUNTIME and
// FUNCTIONS_EXTENSION_VERSION must not be set here.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_66:this is the appsettings resource, not siteConfig; function logs go to Application Insights and the diagnostic setting
  // checkov:skip=CKV_AZURE_63:same: HTTP and execution logs are the FunctionAppLogs category of functionAppDiagnostics
  // checkov:skip=CKV_AZURE_65:same: detailed errors would show stack traces to callers; errors are logged, not shown
  // checkov:skip=CKV_AZURE_222:same: the public HTTP API is the product (see the functionApp resource)
  // checkov:skip=CKV_AZURE_80:a Python app; no .NET Framework runs
  // checkov:skip=CKV_AZURE_13:the API authenticates every caller itself (API keys and Entra ID tokens); App Service Authentication would refuse API keys
  // checkov:skip=CKV_AZURE_88:Flex Consumption deploys from a blob container (functionAppConfig.deployment); it has no Azure Files content share
  parent: functionApp
  name: 'appsettings'
  properties: {
    // Host storage (identity-based)
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    AzureWebJobsStorage__blobServiceUri: blobServiceUri
    AzureWebJobsStorage__queueServiceUri: queueServiceUri

    // Service Bus trigger/binding connection (identity-based)
    ServiceBusConnection__fullyQualifiedNamespace: serviceBusFullyQualifiedNamespace
    ServiceBusConnection__credential: 'managedidentity'
    ServiceBusConnection__clientId: identityClientId

    // Application Insights with Entra ID ingestion (local auth is disabled on the component)
    APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'

    // DefaultAzureCredential picks the user-assigned identity from this
    AZURE_CLIENT_ID: identityClientId

    // Settings read by the AIaaS Python app
    AIAAS_ENVIRONMENT: 'production'
    AIAAS_STORAGE_ACCOUNT_NAME: storageAccountName
    AIAAS_PLATFORM_STORAGE_ACCOUNT_NAME: platformStorageAccountName
    AIAAS_MODELS_CONTAINER: modelsContainerName
    AIAAS_CONTAINER_REGISTRY_URL: containerRegistryUrl
    AIAAS_KEYVAULT_URL: keyVaultUri
    AIAAS_COSMOS_ENDPOINT: cosmosEndpoint
    AIAAS_COSMOS_DATABASE: cosmosDatabaseName
    AIAAS_REGION: region
    AIAAS_DIRECTORY_ENDPOINT: directoryEndpoint
    AIAAS_DIRECTORY_DATABASE: directoryDatabaseName
    AIAAS_JOB_QUEUE_BACKEND: 'servicebus'
    AIAAS_JOB_QUEUE_NAME: serviceBusQueueName
    AIAAS_SERVICEBUS_NAMESPACE: serviceBusFullyQualifiedNamespace
    AIAAS_EVENTGRID_ENDPOINT: eventGridDomainEndpoint
    AIAAS_EVENTGRID_DOMAIN_ID: eventGridDomainId
    // Tenant subscriptions' dead letters: Event Grid writes them there with the domain's identity, the app reads.
    AIAAS_PLATFORM_STORAGE_ACCOUNT_ID: platformStorageAccountId
    AIAAS_DEADLETTER_CONTAINER: deadLetterContainerName
    // Logic Apps callbacks: only these hosts; the relay's header key never sits in the settings in clear.
    AIAAS_CALLBACK_HOSTS: callbackHosts
    AIAAS_RELAY_KEY: '@Microsoft.KeyVault(SecretUri=${relayKeySecretUri})'
    // Retraining: Azure ML command jobs when a workspace is given (scikit-learn is not in the app's package).
    AIAAS_TRAINER: empty(azureMlWorkspaceId) ? 'none' : 'azureml'
    AIAAS_AZUREML_WORKSPACE_ID: azureMlWorkspaceId
    AIAAS_AZUREML_COMPUTE: azureMlCompute
    AIAAS_AZUREML_ENVIRONMENT: azureMlEnvironment
    AIAAS_PUBLIC_API_URL: 'https://${functionApp.properties.defaultHostName}/api'
    // Tenants' webhooks and model endpoints never reach loopback in Azure (the app refuses 'true' outside development).
    AIAAS_ALLOW_LOOPBACK_ENDPOINTS: 'false'
    // Pipeline tunables (the app's defaults, stated so an operator can see and change them)
    AIAAS_BATCH_SIZE: '1000'
    AIAAS_SHARD_BYTES: '33554432'
    AIAAS_MAX_UPLOAD_BYTES: '2147483648'
    AIAAS_MAX_DELIVERY_COUNT: '5'
    // ONNX Runtime intra-op threads per model; 0: one per core of the instance.
    AIAAS_ONNX_THREADS: '0'
    // Timings that agree with host.json and the queue (servicebus.bicep): lock 60 s, functionTimeout 10 min.
    AIAAS_QUEUE_VISIBILITY_SECONDS: '60'
    AIAAS_SHARD_TIMEOUT_SECONDS: '600'
    AIAAS_STALL_SECONDS: '600'
    // Fair share: a tenant gets at most its share of the fleet; the fleet is never handed more than it runs.
    AIAAS_TENANT_MAX_SHARDS_IN_FLIGHT: string(min(tenantMaxShardsInFlight, maxShardsInFlight))
    AIAAS_MAX_SHARDS_IN_FLIGHT: string(maxShardsInFlight)
    AIAAS_MAX_ARCHIVE_BYTES: '268435456'
    AIAAS_MAX_ARCHIVE_ENTRIES: '50000'
    // Each tenant's quotas unless the operator set its own (aiaas tenants set-quota); 0: no limit.
    AIAAS_DEFAULT_RECORDS_PER_DAY: '1000000000'
    AIAAS_DEFAULT_CONCURRENT_JOBS: '1000'
    AIAAS_DEFAULT_MAX_FILE_BYTES: '2147483648'
    AIAAS_DEFAULT_REQUESTS_PER_MINUTE: '60000'
    AIAAS_MAX_SWEEPS: '3'
    AIAAS_DEFAULT_ERROR_THRESHOLD: '-1'
    AIAAS_UPLOAD_SAS_MINUTES: '15'
    // Traces and metrics go to Application Insights (APPLICATIONINSIGHTS_CONNECTION_STRING above), not OTLP.
    AIAAS_OTEL_EXPORTER: 'none'
    // Identity: Entra ID v2 tokens of the public cloud's authority for this audience, next to API keys.
    AIAAS_ENTRA_AUTHORITY: 'https://login.microsoftonline.com'
    AIAAS_ENTRA_AUDIENCE: entraAudience
    // The Functions front end appends the caller's address to X-Forwarded-For: failed authentications are
    // throttled per that address (20 per minute per instance).
    AIAAS_BEHIND_TRUSTED_PROXY: 'true'
    AIAAS_AUTH_FAILURE_LIMIT: '20'
    AIAAS_AUTH_FAILURE_WINDOW_SECONDS: '60'
  }
}

// Function execution logs and the site's and plan's metrics go to the stamp's workspace.
resource functionAppDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: functionApp
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

resource planDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: plan
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output name string = functionApp.name
output resourceId string = functionApp.id
output planName string = plan.name
output defaultHostName string = functionApp.properties.defaultHostName
output baseUrl string = 'https://${functionApp.properties.defaultHostName}'
output publicApiUrl string = 'https://${functionApp.properties.defaultHostName}/api'
