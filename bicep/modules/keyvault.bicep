// Key Vault for tenants' remote-model credentials (shared/adapters/secrets.py KeyVaultSecretStore): RBAC only (no
// access policies), purge protection, reachable without a VNet (the stamp has none); the app's identity
// gets Key Vault Secrets Officer on this vault only (modules/rbac.bicep): it writes a secret when a tenant registers
// a remote model, so the read-only Secrets User role is not enough.
param name string
param location string
param tags object = {}

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

output name string = vault.name
output resourceId string = vault.id
output vaultUri string = vault.properties.vaultUri
