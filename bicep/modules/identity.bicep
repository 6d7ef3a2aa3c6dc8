// User-assigned managed identity used by the function app for every data-plane call
// (storage, Service Bus, Cosmos DB, Event Grid, Application Insights ingestion).
param name string
param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output name string = identity.name
output resourceId string = identity.id
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
