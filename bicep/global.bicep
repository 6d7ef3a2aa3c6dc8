// AIaaS global tenant directory: deployed once, before any stamp (bicep/README.md "Regional stamps").
// It holds only tenant id -> home region and that stamp's public API URL: no tenant data, key, blob or result.
//
//   az deployment sub create -l <region> -f bicep/global.bicep -p environmentName=aiaas-global location=<region>
// Each stamp (main.bicep) then gets the directory's account in directoryAccountName/directoryResourceGroupName
// and grants its own identity Cosmos DB Built-in Data Reader on the directory's database (modules/directory-reader.bicep).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
param environmentName string

@minLength(1)
@description('Where the directory lives: it holds no tenant data, only which region serves each tenant.')
param location string

@description('Optional object id of the operator principal that runs `aiaas tenants create` (writes the directory).')
param operatorPrincipalId string = ''

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  workload: 'aiaas-global'
}

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'global-monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}g${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}g${resourceToken}'
    location: location
    tags: tags
  }
}

module directory 'modules/directory.bicep' = {
  name: 'directory'
  scope: rg
  params: {
    name: '${abbrs.documentDBDatabaseAccounts}dir-${resourceToken}'
    location: location
    tags: tags
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
    operatorPrincipalId: operatorPrincipalId
  }
}

output AIAAS_DIRECTORY_ENDPOINT string = directory.outputs.endpoint
output AIAAS_DIRECTORY_DATABASE string = directory.outputs.databaseName
output AZURE_DIRECTORY_ACCOUNT_NAME string = directory.outputs.name
output AZURE_DIRECTORY_RESOURCE_GROUP string = rg.name
