// Event Grid domain for outbound `AIaaS` platform events. The app publishes with
// topic = <tenant id>; each tenant's webhook subscription lives on its own domain topic.
// Input schema is EventGridSchema; CloudEvents 1.0 vs Event Grid schema for *delivery* is chosen per
// event subscription (eventDeliverySchema), which the app sets when it creates tenant subscriptions.
// The domain's system-assigned identity writes the tenant subscriptions' dead letters (deadLetterWithResourceIdentity)
// to the platform account's `deadletter` container: Storage Blob Data Contributor there only (rbac.bicep).
param name string
param location string
param tags object = {}

@description('Log Analytics workspace that receives the diagnostic settings.')
param logAnalyticsWorkspaceId string

resource domain 'Microsoft.EventGrid/domains@2025-02-15' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'EventGridSchema'
    disableLocalAuth: true
    // TLS 1.2 minimum for publishers (minimumTlsVersionAllowed: API 2025-02-15 and later).
    minimumTlsVersionAllowed: '1.2'
    publicNetworkAccess: 'Enabled'
    // Domain topics appear with a tenant's first subscription and go away with its last one.
    autoCreateTopicWithFirstSubscription: true
    autoDeleteTopicWithLastSubscription: true
  }
}

// Delivery and publish failures (and their metrics) go to the stamp's workspace.
resource domainDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: domain
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

output name string = domain.name
output resourceId string = domain.id
output principalId string = domain.identity.principalId
// e.g. https://<domain>.<region>-1.eventgrid.azure.net/api/events
output endpoint string = domain.properties.endpoint
