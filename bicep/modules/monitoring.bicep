// Log Analytics workspace + workspace-based Application Insights with local (ikey) auth disabled:
// telemetry ingestion requires Entra ID (APPLICATIONINSIGHTS_AUTHENTICATION_STRING on the app,
// Monitoring Metrics Publisher role in rbac.bicep).
param logAnalyticsName string
param applicationInsightsName string
param location string
param tags object = {}

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
  }
}

// The workspace's own audit log (who queried what) stays in the workspace.
resource logAnalyticsDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: logAnalytics
  properties: {
    workspaceId: logAnalytics.id
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output logAnalyticsName string = logAnalytics.name
output logAnalyticsWorkspaceId string = logAnalytics.id
output applicationInsightsName string = applicationInsights.name
output applicationInsightsResourceId string = applicationInsights.id
// The connection string carries only the (non-secret) instrumentation key and ingestion endpoint;
// with DisableLocalAuth it cannot be used without an Entra ID token.
output applicationInsightsConnectionString string = applicationInsights.properties.ConnectionString
