// Storage account: identity-only (shared key disabled), TLS 1.2, no public blob access.
// Fixed containers are created here; per-tenant `tenant-<id>` containers are created at run time by the app.
param name string
param location string
param tags object = {}

@description('Blob containers created with the account.')
param containerNames array

@description('Log Analytics workspace that receives the diagnostic settings.')
param logAnalyticsWorkspaceId string

@description('Origins whose pages may PUT to an upload SAS URL (the web console at /console); none: no CORS rule.')
param corsOrigins array = []

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:tenants upload from their own networks with a user-delegation SAS URL; shared keys are off, so a request needs Entra ID or that SAS
  // checkov:skip=CKV_AZURE_206:no geo-replication: a paired region can lie in another country (Brazil South pairs with South Central US) and a tenant's data must stay in its stamp's region; ZRS keeps three copies there
  // checkov:skip=CKV_AZURE_59:public network access is how tenants upload (SAS URLs); blob public access is off (allowBlobPublicAccess false)
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    // Zone-redundant: an availability zone going down loses no upload or output.
    name: 'Standard_ZRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    dnsEndpointType: 'Standard'
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }

  resource blobServices 'blobServices' = {
    name: 'default'
    properties: {
      deleteRetentionPolicy: {
        enabled: true
        days: 7
      }
      containerDeleteRetentionPolicy: {
        enabled: true
        days: 7
      }
      // A browser's upload from the console: a preflight for PUT with x-ms-blob-type, answered only when a rule
      // names the page's origin (CORS support for Azure Storage: at most 5 rules per service).
      cors: {
        corsRules: empty(corsOrigins) ? [] : [
          {
            allowedOrigins: corsOrigins
            allowedMethods: [
              'PUT'
            ]
            allowedHeaders: [
              'content-type'
              'x-ms-blob-type'
              'x-ms-version'
              'x-ms-date'
              'x-ms-client-request-id'
            ]
            exposedHeaders: [
              'etag'
              'x-ms-request-id'
            ]
            maxAgeInSeconds: 600
          }
        ]
      }
    }
  }
}

// A top-level loop with a parent (not a loop nested in blobServices): checkov's Bicep parser reads this form.
resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for containerName in containerNames: {
    parent: storage::blobServices
    name: containerName
    properties: {
      publicAccess: 'None'
    }
  }
]

// Account metrics and the blob service's read/write/delete logs go to the stamp's workspace.
resource storageDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: storage
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: storage::blobServices
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
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

output name string = storage.name
output resourceId string = storage.id
output primaryBlobEndpoint string = storage.properties.primaryEndpoints.blob
output primaryQueueEndpoint string = storage.properties.primaryEndpoints.queue
