// The global tenant directory (shared/adapters/cosmos_directory.py): a small Cosmos DB account, local (key) auth
// off, database `aiaas-global` with one container `homes` (tenant id -> region, API URL). Stamps only read it
// (modules/directory-reader.bicep); only the operator who creates tenants writes it.
param name string
param location string
param tags object = {}
param databaseName string = 'aiaas-global'

@description('Log Analytics workspace that receives the diagnostic settings.')
param logAnalyticsWorkspaceId string

@description('Optional object id of the operator principal that runs `aiaas tenants create`; empty: none.')
param operatorPrincipalId string = ''

// Cosmos DB Built-in Data Contributor (data-plane SQL role): the operator places tenants.
var cosmosDataContributorRoleId = '00000000-0000-0000-0000-000000000002'

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' = {
  // checkov:skip=CKV_AZURE_101:no virtual network spans the stamps' regions; access is Entra ID only (disableLocalAuth)
  // checkov:skip=CKV_AZURE_99:no IP or VNet filter for the same reason; every request needs an Entra ID token of a SQL role assignment
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
    // A tenant's home is written once and only read after: Session is enough for the writer, and a stamp that
    // misses a tenant created a moment ago reads it again on the next request (misses are not cached).
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    capabilities: [{ name: 'EnableServerless' }]
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
  }
}

// Read by tenant id only (a point read): the id is the partition key.
resource homesContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: database
  name: 'homes'
  properties: {
    resource: {
      id: 'homes'
      partitionKey: {
        paths: ['/id']
        kind: 'Hash'
      }
    }
  }
}

resource cosmosDataContributorRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions@2024-05-15' existing = {
  parent: account
  name: cosmosDataContributorRoleId
}

resource operatorDirectoryWriter 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = if (!empty(operatorPrincipalId)) {
  parent: account
  name: guid(database.id, operatorPrincipalId, cosmosDataContributorRoleId)
  properties: {
    roleDefinitionId: cosmosDataContributorRole.id
    principalId: operatorPrincipalId
    scope: '${account.id}/dbs/${databaseName}'
  }
}

// Every read and write of the directory, and every RBAC decision, go to the global workspace.
resource directoryDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
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
output endpoint string = account.properties.documentEndpoint
output databaseName string = database.name
