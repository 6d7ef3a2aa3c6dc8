// Event Grid system topic on the storage account. Its system-assigned identity writes dead-lettered
// events to the `deadletter` container (Storage Blob Data Contributor, granted in rbac.bicep).
param name string
param location string
param tags object = {}
param storageAccountName string

@description('Log Analytics workspace that receives the diagnostic settings.')
param logAnalyticsWorkspaceId string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// BlobCreated delivery failures go to the stamp's workspace.
resource systemTopicDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: systemTopic
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

output name string = systemTopic.name
output resourceId string = systemTopic.id
output principalId string = systemTopic.identity.principalId
