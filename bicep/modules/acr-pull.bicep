// A stamp's identity pulls container models' metadata (image manifests and configs, whose labels describe the
// model) from the operator's container registry: AcrPull on that registry only. Deployed by main.bicep into the
// registry's resource group when containerRegistryName is set (the registry is shared by stamps, not deployed here).
param containerRegistryName string
@description('Principal id of the stamp\'s function app identity.')
param functionPrincipalId string

// AcrPull: read repositories, manifests and blobs; no push, no delete.
var roles = {
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: containerRegistryName
}

resource appAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, functionPrincipalId, roles.acrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}
