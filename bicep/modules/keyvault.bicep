// Key Vault for tenants' remote-model credentials (shared/adapters/secrets.py KeyVaultSecretStore): RBAC only (no
// access policies), purge protection, reachable without a VNet (the stamp has none); the app's identity
// gets Key Vault Secrets Officer on this vault only (modules/rbac.bicep): it writes a secret when a tenant registers
// a remote model, so the read-only Secrets User role is not enough.
// It also keeps the platform's relay key (AIAAS_RELAY_KEY, read by the app through a Key Vault reference).
param name string
param location string
param tags object = {}

@secure()
@minLength(32)
@description('The key the relay\'s per-subscription delivery header is derived from (AIAAS_RELAY_KEY). Stable: every callback subscription\'s Event Grid header is derived from it, so a new value breaks them all until they are recreated. Set once per azd environment (bicep/README.md), never generated per deployment.')
param relayKey string

@description('Log Analytics workspace that receives the diagnostic settings.')
param logAnalyticsWorkspaceId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109:the stamp has no virtual network (Flex Consumption without VNet integration) and the app's outbound addresses are not fixed; every request needs an Entra ID token of the one role assignment in rbac.bicep
  // checkov:skip=CKV_AZURE_189:public network access for the same reason; RBAC only, no access policies, purge protection on
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enablePurgeProtection: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource vaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
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

// `p-` names are the platform's (shared/adapters/secrets.py vault_name): no tenant's secret can take this one.
resource relayKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41:an expired relay key would stop every callback delivery at once; it is rotated by deploying a new value (bicep/README.md), not by a date
  parent: vault
  name: 'p-relay-key'
  properties: {
    value: relayKey
    contentType: 'text/plain'
  }
}

output name string = vault.name
output resourceId string = vault.id
output vaultUri string = vault.properties.vaultUri
// Versionless: the app's Key Vault reference follows a rotated value.
output relayKeySecretUri string = relayKeySecret.properties.secretUri
