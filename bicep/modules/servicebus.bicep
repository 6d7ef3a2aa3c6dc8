// Service Bus namespace (Standard, local SAS auth disabled) with the `shards` queue: no sessions (a session is
// locked to one receiver, so a session per tenant would run a tenant's shards one at a time across the fleet;
// the app's dispatcher shares the fleet between tenants instead).
// The timings agree with host.json and the app settings (tests/unit/test_timing_agreement.py checks them):
// lockDuration = AIAAS_QUEUE_VISIBILITY_SECONDS (at most 5 minutes); the Functions host renews the lock for
// the whole functionTimeout; duplicate detection (messageId = shard id) is shorter than AIAAS_STALL_SECONDS, so
// the sweeper's re-drive of a lost shard is not dropped as a duplicate.
param name string
param location string
param tags object = {}
param queueName string = 'shards'

@description('Log Analytics workspace that receives the diagnostic settings.')
param logAnalyticsWorkspaceId string

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
      requiresSession: false
      requiresDuplicateDetection: true
      duplicateDetectionHistoryTimeWindow: 'PT5M'
      maxDeliveryCount: 5
      lockDuration: 'PT1M'
      deadLetteringOnMessageExpiration: true
    }
  }
}

resource serviceBusDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: namespace
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

// serviceBusEndpoint looks like https://<ns>.servicebus.windows.net:443/ ; derive the FQDN from it so
// sovereign clouds work without hard-coding the suffix.
var endpointHost = split(namespace.properties.serviceBusEndpoint, '/')[2] // 'https:', '', '<host>[:443]', ''
var fullyQualifiedNamespace = split(endpointHost, ':')[0]

output name string = namespace.name
output resourceId string = namespace.id
output queueName string = namespace::queue.name
output endpoint string = namespace.properties.serviceBusEndpoint
output fullyQualifiedNamespace string = fullyQualifiedNamespace
