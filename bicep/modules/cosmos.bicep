// Cosmos DB for NoSQL: local (key) auth disabled, database `aiaas` with the platform's containers.
param name string
param location string
param tags object = {}
param databaseName string = 'aiaas'

@description('true: serverless capacity mode. false: provisioned autoscale throughput shared at database level.')
param serverless bool = true

@description('Autoscale max RU/s for the shared database throughput (used only when serverless is false).')
@minValue(1000)
param autoscaleMaxThroughput int = 1000

@description('Log Analytics workspace that receives the diagnostic settings.')
param logAnalyticsWorkspaceId string

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' = {
  // checkov:skip=CKV_AZURE_101:the stamp has no virtual network (Flex Consumption without VNet integration); access is Entra ID only (disableLocalAuth)
  // checkov:skip=CKV_AZURE_99:no IP or VNet filter for the same reason; every request needs an Entra ID token of a role assignment in rbac.bicep
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    capabilities: serverless ? [{ name: 'EnableServerless' }] : []
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Enabled'
    enableAutomaticFailover: false
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-05-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
    options: serverless ? {} : { autoscaleSettings: { maxThroughput: autoscaleMaxThroughput } }
  }
}

var defaultIndexingPolicy = {
  indexingMode: 'consistent'
  automatic: true
  includedPaths: [
    { path: '/*' }
  ]
  excludedPaths: [
    { path: '/"_etag"/?' }
  ]
}

// The same as JOBS_INDEXING in shared/adapters/cosmos.py.
var jobsIndexingPolicy = {
  indexingMode: 'consistent'
  automatic: true
  includedPaths: [
    { path: '/*' }
  ]
  excludedPaths: [
    { path: '/shards/plan/*' }
    { path: '/shards/done/*' }
    { path: '/shards/computeSeconds/*' }
    { path: '/shards/sketches/*' }
    { path: '/drift/features/*' }
    { path: '/parameters/*' }
    { path: '/"_etag"/?' }
  ]
}

// Containers partitioned by tenant only.
var tenantScopedContainers = [
  'tenants'
  'jobs'
  'subscriptions'
  'uploads' // upload intents: job parameters given when an upload URL was issued
]

resource tenantContainers 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = [
  for containerName in tenantScopedContainers: {
    parent: database
    name: containerName
    properties: {
      resource: {
        id: containerName
        partitionKey: {
          paths: ['/tenantId']
          kind: 'Hash'
        }
        // Jobs: the shard plan and the done list (thousands of numbers, rewritten per shard) are never queried.
        indexingPolicy: containerName == 'jobs' ? jobsIndexingPolicy : defaultIndexingPolicy
      }
    }
  }
]

// Results: hierarchical partition key (tenantId, jobId); the bulky per-item payload array is not indexed.
resource resultsContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: database
  name: 'results'
  properties: {
    resource: {
      id: 'results'
      partitionKey: {
        paths: ['/tenantId', '/jobId']
        kind: 'MultiHash'
        version: 2
      }
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          { path: '/*' }
        ]
        // The same as RESULTS_INDEXING in shared/adapters/cosmos.py: entries (JSON lines) and parts are never queried.
        excludedPaths: [
          { path: '/items/*' }
          { path: '/errors/*' }
          { path: '/itemLines/?' }
          { path: '/errorLines/?' }
          { path: '/data/?' }
          { path: '/"_etag"/?' }
        ]
      }
    }
  }
}

// Metering (shared/adapters/cosmos_usage.py): usage records (one per finished job, never expiring), the tenants'
// quota overrides and per-minute request counters (ttl 120 s each); defaultTtl -1 turns per-item ttl on.
resource usageContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: database
  name: 'usage'
  properties: {
    resource: {
      id: 'usage'
      partitionKey: {
        paths: ['/tenantId']
        kind: 'Hash'
      }
      defaultTtl: -1
      indexingPolicy: defaultIndexingPolicy
    }
  }
}

// The event log (shared/adapters/cosmos_events.py): every published event per tenant, kept 35 days (defaultTtl; the
// contract promises at least 30), listed newest first by (eventTime, id): the composite index is the same as
// EVENTS_INDEXING there, and Cosmos DB refuses that ORDER BY without it.
resource eventsContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: database
  name: 'events'
  properties: {
    resource: {
      id: 'events'
      partitionKey: {
        paths: ['/tenantId']
        kind: 'Hash'
      }
      defaultTtl: 3024000
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          { path: '/tenantId/?' }
          { path: '/eventTime/?' }
          { path: '/eventType/?' }
          { path: '/id/?' }
        ]
        excludedPaths: [
          { path: '/*' }
          { path: '/"_etag"/?' }
        ]
        compositeIndexes: [
          [
            { path: '/eventTime', order: 'descending' }
            { path: '/id', order: 'descending' }
          ]
        ]
      }
    }
  }
}

// Identity (shared/adapters/cosmos_identity.py). The Entra tenant map is read by a token's tid before the platform
// tenant is known, so the tid is its partition key (one point read; a conditional create: one tid, one tenant).
resource entraTenantsContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: database
  name: 'entraTenants'
  properties: {
    resource: {
      id: 'entraTenants'
      partitionKey: {
        paths: ['/tid']
        kind: 'Hash'
      }
      indexingPolicy: defaultIndexingPolicy
    }
  }
}

// The audit log: append-only per tenant (the app only creates and reads entries), no ttl; read by time and action
// (the same as AUDIT_INDEXING in shared/adapters/cosmos_identity.py).
resource auditContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: database
  name: 'audit'
  properties: {
    resource: {
      id: 'audit'
      partitionKey: {
        paths: ['/tenantId']
        kind: 'Hash'
      }
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          { path: '/tenantId/?' }
          { path: '/time/?' }
          { path: '/action/?' }
        ]
        excludedPaths: [
          { path: '/*' }
          { path: '/"_etag"/?' }
        ]
      }
    }
  }
}

// Data-plane requests, control-plane operations and RBAC decisions go to the stamp's workspace.
resource cosmosDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: account
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Requests'
        enabled: true
      }
    ]
  }
}

output name string = account.name
output resourceId string = account.id
output endpoint string = account.properties.documentEndpoint
output databaseName string = database.name
output containerNames array = concat(tenantScopedContainers, [
  resultsContainer.name
  usageContainer.name
  eventsContainer.name
  entraTenantsContainer.name
  auditContainer.name
])
// What the app may read and write (Data Contributor, per container), apart from the append-only audit log.
output writableContainerNames array = concat(tenantScopedContainers, [
  resultsContainer.name
  usageContainer.name
  eventsContainer.name
  entraTenantsContainer.name
])
output auditContainerName string = auditContainer.name
