// BlobCreated -> `ingest_blob` function, only for tenant inbox uploads.
//
// An AzureFunction destination is validated by Event Grid when the subscription is created, so the
// function code (with `ingest_blob`) must already be deployed; main.bicep therefore only deploys this
// module when deployBlobEventSubscription is true (second `azd provision` after `azd deploy`).
//
// Delivery to an Azure Functions endpoint is authenticated by Event Grid itself (the destination type
// does not support deliveryWithResourceIdentity); dead-lettering uses the system topic's managed identity, into
// the platform account's `deadletter` container, where the tenant subscriptions' dead letters are too.
param systemTopicName string
param functionAppName string
param functionName string = 'ingest_blob'
@description('The platform storage account (its deadletter container).')
param deadLetterStorageAccountName string
param deadLetterContainerName string = 'deadletter'
param subscriptionName string = 'ingest-blob'

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

// ${functionApp.id}/functions/<functionName>
resource ingestFunction 'Microsoft.Web/sites/functions@2024-04-01' existing = {
  parent: functionApp
  name: functionName
}

resource deadLetterStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: deadLetterStorageAccountName
}

resource blobCreatedSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  name: subscriptionName
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: ingestFunction.id
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      enableAdvancedFilteringOnArrays: true
      advancedFilters: [
        {
          operatorType: 'StringBeginsWith'
          key: 'subject'
          values: [
            '/blobServices/default/containers/tenant-'
          ]
        }
        {
          operatorType: 'StringContains'
          key: 'subject'
          values: [
            '/blobs/inbox/'
          ]
        }
        {
          operatorType: 'StringIn'
          key: 'data.api'
          values: [
            'PutBlob'
            'PutBlockList'
            'CopyBlob'
            'FlushWithClose'
          ]
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output name string = blobCreatedSubscription.name
output resourceId string = blobCreatedSubscription.id
