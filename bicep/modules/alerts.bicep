// Azure Monitor log alerts for what an operator must hear about, over the stamp's Log Analytics workspace.
// Application Insights is workspace-based (monitoring.bicep), so the app's telemetry sits in the workspace's App*
// tables: the Functions host forwards Python logging as AppTraces (Message is the formatted %-style text, hence the
// queries match the messages the code writes), HTTP calls as AppRequests, exceptions as AppExceptions.
// Service Bus and Event Grid counters come from AzureMetrics, which their diagnostic settings (AllMetrics) send to
// the same workspace.
// Neither scheduled query rules nor action groups have diagnostic log categories: nothing here takes a
// diagnostic setting. Each rule's own firing history is in the Azure Monitor alerts store.
param logAnalyticsName string
param location string
param tags object = {}

@description('Short name used in the alert rule names (the environment name).')
param namePrefix string

@description('Email address that receives the alerts. Empty: the rules fire into the portal only.')
param alertEmail string = ''

@description('A model whose jobs fail more often than this (percent, over the window) raises an alert.')
@minValue(1)
@maxValue(100)
param jobFailurePercentThreshold int = 20

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: 'ag-${namePrefix}-aiaas'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'aiaas'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var rules = [
  {
    name: 'dead-lettered-shards'
    severity: 1
    description: 'Shards that failed on their last delivery (the worker ends the job with the reason) or that Service Bus dead-lettered (a worker died holding them max-delivery-count times).'
    // functions/worker.py: "shard %s failed on its last delivery"; shared/localhost/worker.py: "message %s dead-lettered".
    query: 'union (AppTraces | where Message has "failed on its last delivery" or Message has "dead-lettered" | project TimeGenerated), (AzureMetrics | where ResourceProvider == "MICROSOFT.SERVICEBUS" and MetricName == "DeadletteredMessages" and Maximum > 0 | project TimeGenerated)'
    timeAggregation: 'Count'
    metricMeasureColumn: null
    dimensions: []
    threshold: 0
  }
  {
    name: 'dead-lettered-events'
    severity: 1
    description: 'Event Grid gave up on an event (a tenant subscription or the BlobCreated -> ingest_blob subscription) and wrote it to the dead-letter container.'
    query: 'AzureMetrics | where ResourceProvider == "MICROSOFT.EVENTGRID" and MetricName == "DeadLetteredCount" and Total > 0'
    timeAggregation: 'Count'
    metricMeasureColumn: null
    dimensions: []
    threshold: 0
  }
  {
    name: 'job-failure-rate-per-model'
    severity: 2
    description: 'Share of the jobs of one model that ended failed over the window, from the ingest ("job %s queued: %s over %s") and terminal ("job %s ended %s; event published") log lines.'
    // A job queued before the window is not counted: the rate is over jobs that started and ended within it.
    query: 'let queued = AppTraces | where Message startswith "job " and Message has " queued: " | extend jobId = extract(@"^job (\\S+) queued: ", 1, Message), model = extract(@" queued: (\\S+) over ", 1, Message) | distinct jobId, model; AppTraces | where Message startswith "job " and Message has "; event published" | extend jobId = extract(@"^job (\\S+) ended ", 1, Message), status = extract(@" ended (\\w+); ", 1, Message) | distinct jobId, status | join kind=inner queued on jobId | summarize jobs = count(), failed = countif(status == "failed") by model | where jobs >= 5 | extend FailurePercent = 100.0 * failed / jobs'
    timeAggregation: 'Maximum'
    metricMeasureColumn: 'FailurePercent'
    dimensions: [
      {
        name: 'model'
        operator: 'Include'
        values: [
          '*'
        ]
      }
    ]
    threshold: jobFailurePercentThreshold
  }
  {
    name: 'drift'
    severity: 2
    description: 'A finished job of a tabular model reported drift against its training profile.'
    // The code does not emit a drift signal yet: this rule matches the custom event (AppEvents) named
    // "aiaas.drift" and any log line saying a job "drifted", which the drift check is to write.
    query: 'union (AppEvents | where Name == "aiaas.drift" | project TimeGenerated), (AppTraces | where Message has "drifted" | project TimeGenerated)'
    timeAggregation: 'Count'
    metricMeasureColumn: null
    dimensions: []
    threshold: 0
  }
  {
    name: 'quota-rejections'
    severity: 3
    description: 'Requests or uploads refused over a tenant quota or rate (429 QuotaExceeded, or an upload rejected over its quota).'
    // 429 is shared/api/app.py's status for QuotaExceeded; "upload %s rejected: %s" is shared/services/ingest.py's.
    // "aiaas.quota_rejected" is a custom event name reserved for a quota check that emits one (none does yet).
    query: 'union (AppRequests | where ResultCode == "429" | project TimeGenerated), (AppTraces | where Message startswith "upload " and Message has " rejected: " and Message has "quota" | project TimeGenerated), (AppEvents | where Name == "aiaas.quota_rejected" | project TimeGenerated)'
    timeAggregation: 'Count'
    metricMeasureColumn: null
    dimensions: []
    threshold: 10
  }
  {
    name: 'function-errors'
    severity: 1
    description: 'Function invocations that failed, unhandled exceptions, and error-level log lines (a 5xx at the API is always a defect).'
    query: 'union (AppRequests | where Success == false and toint(ResultCode) !in (400, 401, 403, 404, 409, 412, 413, 415, 422, 429) | project TimeGenerated), (AppExceptions | project TimeGenerated), (AppTraces | where SeverityLevel >= 3 | project TimeGenerated)'
    timeAggregation: 'Count'
    metricMeasureColumn: null
    dimensions: []
    threshold: 0
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [
  for rule in rules: {
    name: 'alert-${namePrefix}-${rule.name}'
    location: location
    tags: tags
    kind: 'LogAlert'
    properties: {
      displayName: 'aiaas ${namePrefix}: ${rule.name}'
      description: rule.description
      severity: rule.severity
      enabled: true
      scopes: [
        workspace.id
      ]
      evaluationFrequency: 'PT5M'
      windowSize: 'PT15M'
      autoMitigate: true
      criteria: {
        allOf: [
          {
            query: rule.query
            timeAggregation: rule.timeAggregation
            metricMeasureColumn: rule.metricMeasureColumn
            dimensions: rule.dimensions
            operator: 'GreaterThan'
            threshold: rule.threshold
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      actions: {
        actionGroups: empty(alertEmail) ? [] : [actionGroup.id]
      }
    }
  }
]

output alertRuleNames array = [for (rule, i) in rules: alertRules[i].name]
