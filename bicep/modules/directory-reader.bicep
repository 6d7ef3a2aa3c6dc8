// A stamp's identity reads the global tenant directory: Cosmos DB Built-in Data Reader on its database only.
// Deployed by main.bicep into the directory's resource group (global.bicep).
param directoryAccountName string
param directoryDatabaseName string = 'aiaas-global'
@description('Principal id of the stamp\'s function app identity.')
param functionPrincipalId string

// Cosmos DB Built-in Data Reader (data-plane SQL role): point reads and queries, no writes.
var cosmosDataReaderRoleId = '00000000-0000-0000-0000-000000000001'

resource directory 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' existing = {
  name: directoryAccountName

  resource database 'sqlDatabases' existing = {
    name: directoryDatabaseName
  }
}

resource cosmosDataReaderRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions@2024-05-15' existing = {
  parent: directory
  name: cosmosDataReaderRoleId
}

resource stampDirectoryReader 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = {
  parent: directory
  name: guid(directory::database.id, functionPrincipalId, cosmosDataReaderRoleId)
  properties: {
    roleDefinitionId: cosmosDataReaderRole.id
    principalId: functionPrincipalId
    scope: '${directory.id}/dbs/${directoryDatabaseName}'
  }
}
