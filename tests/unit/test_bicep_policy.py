"""The project's own policy on the parsed Bicep: no keys, local auth off, TLS 1.2, least privilege, diagnostics."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_bicep_parse import BICEP_DIR, broken_copy, parse_dir

# Text that means a key or a connection string with a secret is read or written (ARM list* functions, key fields).
KEY_PATTERNS = [
    r"\blist[A-Za-z]*Keys?\s*\(",
    r"\blistConnectionStrings\s*\(",
    r"AccountKey=",
    r"SharedAccessKey",
    r"primaryMasterKey|secondaryMasterKey|primaryKey\b|secondaryKey\b",
]

# type -> (property path under the resource body, required value, why)
REQUIRED = {
    "Microsoft.Storage/storageAccounts": [
        ("properties.allowSharedKeyAccess", False, "shared key access off"),
        ("properties.minimumTlsVersion", "TLS1_2", "TLS 1.2 minimum"),
        ("properties.supportsHttpsTrafficOnly", True, "https only"),
        ("properties.allowBlobPublicAccess", False, "no anonymous blob access"),
    ],
    "Microsoft.DocumentDB/databaseAccounts": [
        ("properties.disableLocalAuth", True, "key auth off"),
        ("properties.minimalTlsVersion", "Tls12", "TLS 1.2 minimum"),
    ],
    "Microsoft.ServiceBus/namespaces": [
        ("properties.disableLocalAuth", True, "SAS auth off"),
        ("properties.minimumTlsVersion", "1.2", "TLS 1.2 minimum"),
    ],
    "Microsoft.EventGrid/domains": [
        ("properties.disableLocalAuth", True, "access keys off"),
        ("properties.minimumTlsVersionAllowed", "1.2", "TLS 1.2 minimum"),
    ],
    "Microsoft.EventGrid/topics": [
        ("properties.disableLocalAuth", True, "access keys off"),
        ("properties.minimumTlsVersionAllowed", "1.2", "TLS 1.2 minimum"),
    ],
    "Microsoft.Insights/components": [("properties.DisableLocalAuth", True, "instrumentation-key ingestion off")],
    "Microsoft.Web/sites": [
        ("properties.httpsOnly", True, "https only"),
        ("properties.siteConfig.minTlsVersion", "1.2", "TLS 1.2 minimum"),
        ("properties.siteConfig.ftpsState", "Disabled", "no FTP"),
    ],
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies": [("properties.allow", False, "no basic-auth publishing")],
    "Microsoft.KeyVault/vaults": [
        ("properties.enableRbacAuthorization", True, "RBAC, not access policies"),
        ("properties.enablePurgeProtection", True, "purge protection"),
    ],
}

# Resources that emit resource logs or metrics: each needs a diagnostic setting to a workspace.
NEEDS_DIAGNOSTICS = {
    "Microsoft.Storage/storageAccounts",
    "Microsoft.Storage/storageAccounts/blobServices",
    "Microsoft.Storage/storageAccounts/queueServices",
    "Microsoft.DocumentDB/databaseAccounts",
    "Microsoft.ServiceBus/namespaces",
    "Microsoft.EventGrid/domains",
    "Microsoft.EventGrid/topics",
    "Microsoft.EventGrid/systemTopics",
    "Microsoft.Web/sites",
    "Microsoft.Web/serverfarms",
    "Microsoft.KeyVault/vaults",
    "Microsoft.OperationalInsights/workspaces",
}
# Every other type declared in bicep/ must be here, with why it needs no diagnostic setting of its own.
NO_DIAGNOSTICS = {
    "Microsoft.Resources/resourceGroups": "no resource logs; its operations are in the Activity Log",
    "Microsoft.ManagedIdentity/userAssignedIdentities": "no resource logs; sign-ins are in Entra ID's logs",
    "Microsoft.Authorization/roleAssignments": "changes are in the Activity Log",
    "Microsoft.Insights/diagnosticSettings": "the setting itself",
    "Microsoft.Insights/components": "workspace-based: its telemetry is stored in the workspace already",
    "Microsoft.Insights/actionGroups": "notifications are in the Activity Log",
    "Microsoft.Insights/scheduledQueryRules": "alert firings are in the Activity Log",
    "Microsoft.Insights/metricAlerts": "alert firings are in the Activity Log",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "covered by the blob service's setting",
    "Microsoft.ServiceBus/namespaces/queues": "covered by the namespace's setting",
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases": "covered by the account's setting",
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers": "covered by the account's setting",
    "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments": "covered by the account's setting",
    "Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions": "covered by the account's setting",
    "Microsoft.Web/sites/config": "covered by the site's setting",
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies": "covered by the site's setting",
    "Microsoft.EventGrid/systemTopics/eventSubscriptions": "delivery failures are the system topic's logs",
    "Microsoft.EventGrid/domains/topics": "covered by the domain's setting",
    "Microsoft.KeyVault/vaults/secrets": "covered by the vault's setting (AuditEvent: every read and write)",
}

# The only Azure roles bicep/ may grant, each with the resource types it may be scoped to (never a group or above).
ALLOWED_ROLES = {
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": (
        "Storage Blob Data Contributor",
        {"Microsoft.Storage/storageAccounts", "Microsoft.Storage/storageAccounts/blobServices/containers"},
    ),
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": (
        "Storage Queue Data Contributor",
        {"Microsoft.Storage/storageAccounts", "Microsoft.Storage/storageAccounts/queueServices/queues"},
    ),
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": (
        "Storage Blob Data Reader",
        {"Microsoft.Storage/storageAccounts/blobServices/containers"},
    ),
    "7f951dda-4ed3-4680-a7ca-43fe172d538d": ("AcrPull", {"Microsoft.ContainerRegistry/registries"}),
    "db58b8e5-c6ad-4a2a-8342-4190687cbf4a": ("Storage Blob Delegator", {"Microsoft.Storage/storageAccounts"}),
    "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39": (
        "Azure Service Bus Data Sender",
        {"Microsoft.ServiceBus/namespaces/queues"},
    ),
    "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0": (
        "Azure Service Bus Data Receiver",
        {"Microsoft.ServiceBus/namespaces/queues"},
    ),
    "d5a91429-5739-47e2-a06b-3470a27159e7": ("EventGrid Data Sender", {"Microsoft.EventGrid/domains"}),
    "428e0ff0-5e57-4d9c-a221-2c70d0e0a443": (
        "EventGrid EventSubscription Contributor",
        {"Microsoft.EventGrid/domains"},
    ),
    "3913510d-42f4-4e42-8a64-420c390055eb": ("Monitoring Metrics Publisher", {"Microsoft.Insights/components"}),
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": ("Key Vault Secrets Officer", {"Microsoft.KeyVault/vaults"}),
}
# Some principals need less than a role's widest allowed scope: the system topic and the domain only write dead
# letters.
NARROWEST_SCOPE = {
    "systemTopicPrincipalId": {"Microsoft.Storage/storageAccounts/blobServices/containers"},
    "domainPrincipalId": {"Microsoft.Storage/storageAccounts/blobServices/containers"},
}
WELL_KNOWN = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-49b0-a7cd-0b5ed5bb5e7e": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "090c5cfd-751d-490a-894a-3ce6f1109419": "Azure Service Bus Data Owner",
    "1e241071-0855-49ea-94dc-649edcd759de": "EventGrid Contributor",
}
# Cosmos DB SQL (data-plane) roles: Built-in Data Reader and Data Contributor, on a database at most.
COSMOS_ROLES = {"00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"}
# A custom SQL role may only read and append: the audit log's (no replace, upsert, patch or delete of an item).
APPEND_ONLY_ACTIONS = {
    "Microsoft.DocumentDB/databaseAccounts/readMetadata",
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/create",
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/read",
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/executeQuery",
}
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _get(body: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(body, dict) or key not in body:
            return "<missing>"
        body = body[key]
    return body


def _expr(value: Any) -> str:
    return str(value["expr"]) if isinstance(value, dict) and "expr" in value else str(value)


def _role_ids(resource: dict[str, Any], variables: dict[str, Any]) -> list[str]:
    """The role definition GUIDs a role assignment grants (a loop grants each item of its array)."""
    text = _expr(_get(resource["body"], "properties.roleDefinitionId"))
    refs = [text]
    if resource["loop"]:
        for name, value in variables.items():
            if isinstance(value, list) and re.search(rf"\b{name}\b", resource["loop_over"]):
                refs += [_expr(item) for item in value]
    roles = variables.get("roles", {})
    found: list[str] = []
    for ref in refs:
        found += GUID.findall(ref)
        found += [roles[m] for m in re.findall(r"\broles\.(\w+)", ref) if m in roles]
    return found


def findings(parsed: list[dict[str, Any]]) -> list[str]:
    """Every policy violation in the parsed files, as `file:line message`."""
    out: list[str] = []
    for file in parsed:
        path, variables = file["path"], file["variables"]
        for pattern in KEY_PATTERNS:
            for match in re.finditer(pattern, file["text"]):
                line = file["text"].count("\n", 0, match.start()) + 1
                out.append(f"{path}:{line} reads or writes a key or connection string: {match.group(0)!r}")
        symbols = {r["symbol"]: r for r in file["resources"]}
        diagnosed = {
            _expr(_get(r["body"], "scope"))
            for r in file["resources"]
            if r["type"] == "Microsoft.Insights/diagnosticSettings"
            and _get(r["body"], "properties.workspaceId") != "<missing>"
            and (
                _get(r["body"], "properties.logs") != "<missing>"
                or _get(r["body"], "properties.metrics") != "<missing>"
            )
        }
        for r in file["resources"]:
            where = f"{path}:{r['line']} {r['symbol']} ({r['type']})"
            if r["existing"]:
                continue
            for prop, wanted, why in REQUIRED.get(r["type"], []):
                if _get(r["body"], prop) != wanted:
                    out.append(f"{where}: {prop} must be {wanted!r} ({why})")
            if r["type"] in NEEDS_DIAGNOSTICS and r["symbol"] not in diagnosed:
                out.append(f"{where}: no diagnostic setting to a workspace")
            elif r["type"] not in NEEDS_DIAGNOSTICS and r["type"] not in NO_DIAGNOSTICS:
                out.append(f"{where}: type not classified for diagnostics (add it to NEEDS_ or NO_DIAGNOSTICS)")
            if r["type"] == "Microsoft.Authorization/roleAssignments":
                out += _role_findings(where, r, variables, symbols)
            if r["type"] == "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments":
                out += _cosmos_role_findings(where, r, variables, symbols)
    return out


def _role_findings(
    where: str, r: dict[str, Any], variables: dict[str, Any], symbols: dict[str, dict[str, Any]]
) -> list[str]:
    out: list[str] = []
    scope = _expr(_get(r["body"], "scope"))
    scope_type = symbols[scope]["type"] if scope in symbols else None
    principal = _expr(_get(r["body"], "properties.principalId"))
    role_ids = _role_ids(r, variables)
    if not role_ids:
        out.append(f"{where}: role definition not resolved")
    for role in role_ids:
        if role not in ALLOWED_ROLES:
            out.append(f"{where}: {WELL_KNOWN.get(role, role)} is not a least-privilege role this stamp grants")
            continue
        name, scopes = ALLOWED_ROLES[role]
        scopes = NARROWEST_SCOPE.get(principal, scopes)
        if scope_type not in scopes:
            out.append(f"{where}: {name} scoped to {scope_type or 'the resource group'}, not the narrowest {scopes}")
    return out


def _cosmos_role_findings(
    where: str, r: dict[str, Any], variables: dict[str, Any], symbols: dict[str, dict[str, Any]]
) -> list[str]:
    out: list[str] = []
    ref = _expr(_get(r["body"], "properties.roleDefinitionId")).split(".")[0]
    definition = symbols.get(ref, {}).get("body", {})
    role = variables.get(_expr(definition.get("name", "")), _expr(definition.get("name", ref)))
    scope = _expr(_get(r["body"], "properties.scope"))
    if _get(definition, "properties.type") == "CustomRole":
        actions = set()
        for permission in _get(definition, "properties.permissions") or []:
            actions |= (
                {_expr(a) for a in (permission.get("dataActions") or [])} if isinstance(permission, dict) else set()
            )
        if not actions or not actions <= APPEND_ONLY_ACTIONS:
            out.append(f"{where}: custom Cosmos DB SQL role grants more than append and read: {sorted(actions)}")
        if "/colls/" not in scope:
            out.append(f"{where}: custom Cosmos DB SQL role scoped above its container")
    elif role not in COSMOS_ROLES:
        out.append(f"{where}: Cosmos DB SQL role {role} is not Built-in Data Reader/Contributor")
    if "/dbs/" not in scope:
        out.append(f"{where}: Cosmos DB SQL role scoped to the account, not the database")
    return out


def test_the_app_cannot_change_or_delete_an_audit_entry() -> None:
    """The app's Data Contributor is per container and never on `audit`; there it holds only the append-only role."""
    rbac = next(f for f in parse_dir() if f["path"].endswith("rbac.bicep"))
    grants = [
        r
        for r in rbac["resources"]
        if r["type"] == "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments"
        and _expr(_get(r["body"], "properties.principalId")) == "functionPrincipalId"
    ]
    contributor = [
        r for r in grants if "cosmosDataContributorRole" in _expr(_get(r["body"], "properties.roleDefinitionId"))
    ]
    assert contributor and all(
        r["loop"] and "/colls/" in _expr(_get(r["body"], "properties.scope")) for r in contributor
    )
    main = next(f for f in parse_dir() if f["path"].endswith("main.bicep"))
    assert "cosmosContainerNames: cosmos.outputs.writableContainerNames" in main["text"]
    cosmos = next(f for f in parse_dir() if f["path"].endswith("cosmos.bicep"))
    writable = cosmos["text"].split("output writableContainerNames", 1)[1].split("output ", 1)[0]
    assert "auditContainer" not in writable
    # Above a container the app may only read (the SDK reads the database's metadata).
    wide = [r for r in grants if "/colls/" not in _expr(_get(r["body"], "properties.scope"))]
    assert [_expr(_get(r["body"], "properties.roleDefinitionId")) for r in wide] == ["cosmosDataReaderRole.id"]
    appender = [r for r in grants if "auditAppenderRole" in _expr(_get(r["body"], "properties.roleDefinitionId"))]
    assert len(appender) == 1 and _expr(_get(appender[0]["body"], "properties.scope")).endswith(
        "/colls/${cosmosAuditContainerName}'"
    )


DEAD_LETTERS = "platformStorage::blobServices::deadLetterContainer"


def _grants(rbac: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(principal, role name, scope) of every Azure role assignment in rbac.bicep, a loop's roles each."""
    return [
        (
            _expr(_get(r["body"], "properties.principalId")),
            ALLOWED_ROLES.get(role, (role,))[0],
            _expr(_get(r["body"], "scope")),
        )
        for r in rbac["resources"]
        if r["type"] == "Microsoft.Authorization/roleAssignments"
        for role in _role_ids(r, rbac["variables"])
    ]


def test_dead_letters_are_written_by_event_grid_and_only_read_by_the_app() -> None:
    """The platform account's `deadletter` container: the domain's and the system topic's identities write it, the
    app (and the optional operator) only read it; the domain's identity holds nothing else."""
    parsed = parse_dir()
    rbac = next(f for f in parsed if f["path"] == "modules/rbac.bicep")
    grants = _grants(rbac)
    assert sorted(g[:2] for g in grants if g[2] == DEAD_LETTERS) == [
        ("domainPrincipalId", "Storage Blob Data Contributor"),
        ("functionPrincipalId", "Storage Blob Data Reader"),
        ("systemTopicPrincipalId", "Storage Blob Data Contributor"),
        ("userPrincipalId", "Storage Blob Data Reader"),
    ]
    assert [g for g in grants if g[0] == "domainPrincipalId"] == [
        ("domainPrincipalId", "Storage Blob Data Contributor", DEAD_LETTERS)
    ]
    assert {g[1] for g in grants if g[2] == "eventGridDomain" and g[0] == "functionPrincipalId"} == {
        "EventGrid Data Sender",
        "EventGrid EventSubscription Contributor",
    }
    existing = {r["symbol"]: r for r in rbac["resources"] if r["existing"]}
    assert existing[DEAD_LETTERS]["body"]["name"] == {"expr": "deadLetterContainerName"}
    # The container sits in the platform account (no tenant SAS can name it), the domain has the identity that
    # dead-letters, and both Event Grid subscriptions of the stamp point there.
    main = next(f for f in parsed if f["path"] == "main.bicep")["text"]
    platform = main.split("module platformStorage", 1)[1].split("\nmodule ", 1)[0]
    tenants = main.split("module storage ", 1)[1].split("\nmodule ", 1)[0]
    assert "deadLetterContainerName" in platform and "deadLetterContainerName" not in tenants
    assert "domainPrincipalId: eventGridDomain.outputs.principalId" in main
    assert "deadLetterStorageAccountName: platformStorage.outputs.name" in main
    domain = next(f for f in parsed if f["path"] == "modules/eventgrid-domain.bicep")
    (resource,) = [r for r in domain["resources"] if r["type"] == "Microsoft.EventGrid/domains"]
    assert resource["body"]["identity"] == {"type": "SystemAssigned"}


def test_the_relay_key_is_a_key_vault_reference_to_a_secret_the_deployment_is_given() -> None:
    parsed = {f["path"]: f for f in parse_dir()}
    app = next(r for r in parsed["modules/functionapp.bicep"]["resources"] if r["type"] == "Microsoft.Web/sites/config")
    assert (
        _expr(app["body"]["properties"]["AIAAS_RELAY_KEY"]) == "'@Microsoft.KeyVault(SecretUri=${relayKeySecretUri})'"
    )
    site = next(r for r in parsed["modules/functionapp.bicep"]["resources"] if r["type"] == "Microsoft.Web/sites")
    assert _expr(site["body"]["properties"]["keyVaultReferenceIdentity"]) == "identityId"
    vault = parsed["modules/keyvault.bicep"]
    (secret,) = [r for r in vault["resources"] if r["type"] == "Microsoft.KeyVault/vaults/secrets"]
    assert _expr(secret["body"]["properties"]["value"]) == "relayKey"
    # A parameter the azd environment keeps, never a value made up at each deployment.
    for path in ("main.bicep", "modules/keyvault.bicep"):
        text = parsed[path]["text"]
        assert "@secure()\n@minLength(32)" in text and "param relayKey string\n" in text, path
        assert "newGuid(" not in text, path
    assert '"${AZURE_RELAY_KEY}"' in (BICEP_DIR / "main.parameters.json").read_text()


def test_the_stamp_follows_the_policy() -> None:
    parsed = parse_dir()
    assert findings(parsed) == []
    # Parameter files carry no key either.
    for path in BICEP_DIR.rglob("*.json"):
        assert not [p for p in KEY_PATTERNS if re.search(p, path.read_text())], path
    # The rules did look at what they guard (a rule over no resource passes by default).
    types = {r["type"] for p in parsed for r in p["resources"] if not r["existing"]}
    assert {"Microsoft.Storage/storageAccounts", "Microsoft.Authorization/roleAssignments"} <= types
    assert {"Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments", "Microsoft.Web/sites"} <= types


VAULT = """resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv${uniqueString(name)}'
  location: location
  properties: {
    tenantId: tenant().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enablePurgeProtection: false
  }
}
"""

BROKEN = [
    ("modules/storage.bicep", "allowSharedKeyAccess: false", "allowSharedKeyAccess: true", "allowSharedKeyAccess"),
    ("modules/cosmos.bicep", "disableLocalAuth: true", "disableLocalAuth: false", "disableLocalAuth"),
    ("modules/servicebus.bicep", "minimumTlsVersion: '1.2'", "minimumTlsVersion: '1.0'", "minimumTlsVersion"),
    (
        "modules/cosmos.bicep",
        "output name string = account.name",
        "output key string = account.listKeys().primaryMasterKey\noutput name string = account.name",
        "key or connection string",
    ),
    (
        "modules/functionapp.bicep",
        "    AIAAS_ENVIRONMENT: 'production'\n",
        "    AIAAS_ENVIRONMENT: 'production'\n    AIAAS_STORAGE_CONNECTION_STRING: 'AccountName=x;AccountKey=y'\n",
        "key or connection string",
    ),
    (
        "modules/rbac.bicep",
        "monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'",
        "monitoringMetricsPublisher: '8e3af657-a8ff-443c-a75c-2fe8c4bcb635'",
        "Owner is not a least-privilege role",
    ),
    (
        "modules/rbac.bicep",
        "  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'",
        "  storageBlobDataContributor: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'",
        "Storage Blob Data Owner is not a least-privilege role",
    ),
    (
        "modules/rbac.bicep",
        "domainPrincipalId, roles.storageBlobDataContributor)\n"
        "  scope: platformStorage::blobServices::deadLetterContainer\n",
        "domainPrincipalId, roles.storageBlobDataContributor)\n  scope: platformStorage\n",
        "Storage Blob Data Contributor scoped to Microsoft.Storage/storageAccounts, not the narrowest",
    ),
    (
        "modules/rbac.bicep",
        "systemTopicPrincipalId, roles.storageBlobDataContributor)\n"
        "  scope: platformStorage::blobServices::deadLetterContainer\n",
        "systemTopicPrincipalId, roles.storageBlobDataContributor)\n  scope: platformStorage\n",
        "Storage Blob Data Contributor scoped to Microsoft.Storage/storageAccounts, not the narrowest",
    ),
    (
        "modules/rbac.bicep",
        "functionPrincipalId, roles.storageBlobDataReader)\n"
        "  scope: platformStorage::blobServices::deadLetterContainer\n",
        "functionPrincipalId, roles.storageBlobDataReader)\n  scope: platformStorage\n",
        "Storage Blob Data Reader scoped to Microsoft.Storage/storageAccounts, not the narrowest",
    ),
    (
        "modules/rbac.bicep",
        "functionPrincipalId, roleId)\n    scope: serviceBus::queue\n",
        "functionPrincipalId, roleId)\n    scope: serviceBus\n",
        "Service Bus Data Sender scoped to Microsoft.ServiceBus/namespaces, not the narrowest",
    ),
    (
        "modules/rbac.bicep",
        "  name: guid(applicationInsights.id, functionPrincipalId, roles.monitoringMetricsPublisher)\n"
        "  scope: applicationInsights\n",
        "  name: guid(applicationInsights.id, functionPrincipalId, roles.monitoringMetricsPublisher)\n",
        "scoped to the resource group",
    ),
    (
        "modules/rbac.bicep",
        "    principalId: userPrincipalId\n    scope: '${cosmos.id}/dbs/${cosmosDatabaseName}'\n",
        "    principalId: userPrincipalId\n    scope: cosmos.id\n",
        "Cosmos DB SQL role scoped to the account",
    ),
    (
        "modules/rbac.bicep",
        "          'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/create'\n",
        "          'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/*'\n",
        "grants more than append and read",
    ),
    ("modules/servicebus.bicep", "  scope: namespace\n", "  scope: namespace::queue\n", "no diagnostic setting"),
    ("modules/identity.bicep", "output name string", VAULT + "output name string", "enablePurgeProtection"),
]


@pytest.mark.parametrize(("relpath", "old", "new", "expected"), BROKEN, ids=[f"{b[0]}:{b[3]}" for b in BROKEN])
def test_a_broken_copy_is_reported(tmp_path: Path, relpath: str, old: str, new: str, expected: str) -> None:
    copy = broken_copy(tmp_path, relpath, old, new)
    found = findings(parse_dir(copy))
    assert any(expected in f and f.startswith(relpath) for f in found), found


def test_the_event_log_container_is_deployed_as_the_adapter_creates_it() -> None:
    """bicep's `events` container has the adapter's partition key, ttl and indexes (its composite index above all:
    Cosmos DB refuses the newest-first listing without it), and the app may write it."""
    from shared.adapters.cosmos_events import EVENTS_INDEXING, EVENTS_TTL_SECONDS

    cosmos = next(f for f in parse_dir() if f["path"].endswith("cosmos.bicep"))
    body = next(r["body"] for r in cosmos["resources"] if r["body"].get("name") == "events")["properties"]["resource"]
    assert body["partitionKey"]["paths"] == ["/tenantId"]
    assert body["defaultTtl"] == EVENTS_TTL_SECONDS >= 30 * 24 * 3600
    for key in ("includedPaths", "excludedPaths", "compositeIndexes"):
        assert body["indexingPolicy"][key] == EVENTS_INDEXING[key]
    writable = cosmos["text"].split("output writableContainerNames", 1)[1].split("output ", 1)[0]
    assert "eventsContainer.name" in writable
