// Service Bus namespace (Standard, local SAS auth disabled) with the session-enabled `shards` queue.
param name string
param location string
param tags object = {}
param queueName string = 'shards'

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }

  resource queue 'queues' = {
    name: queueName
    properties: {
      requiresSession: true
      requiresDuplicateDetection: true
      duplicateDetectionHistoryTimeWindow: 'PT10M'
      maxDeliveryCount: 5
      lockDuration: 'PT5M'
      deadLetteringOnMessageExpiration: true
    }
  }
}

// serviceBusEndpoint looks like https://<ns>.servicebus.windows.net:443/ ; derive the FQDN from it so
// sovereign clouds work without hard-coding the suffix.
var endpointHost = split(namespace.properties.serviceBusEndpoint, '/')[2] // 'https:', '', '<host>[:443]', ''
var fullyQualifiedNamespace = split(endpointHost, ':')[0]

output name string = namespace.name
output resourceId string = namespace.id
output queueName string = namespace::queue.name
output endpoint string = namespace.properties.serviceBusEndpoint
output fullyQualifiedNamespace string = fullyQualifiedNamespace
