#!/usr/bin/env node
// Serves @vercel/cosmosdb-server (the local Cosmos DB stand-in) over HTTPS with HTTP keep-alive.
//
// The package's own CLI (`cosmosdb-server`) builds its request handler with keepAlive=false, which
// makes every response carry `connection: close`: each SDK call then pays a fresh TCP + TLS
// handshake (~30 ms). createHttpsServer() accepts `keepAlive: true`, which makes the handler send
// `connection: keep-alive` instead; we also lengthen Node's idle keep-alive timeout (default 5 s)
// so pooled client connections are not dropped between test steps.
//
// It also patches stand-in bugs: a conditional patch checked against other partitions' documents (see
// patchConditionalPatch), and reading a missing document in a container with a hierarchical
// (MultiHash) partition key crashed the handler (500 "Cannot read properties of undefined") instead of
// answering 404 NotFound. node_modules is not edited; the handler module is patched before the routes
// table is built.
//
// It enforces, before the package's handler sees a request, the Azure Cosmos DB limits the platform relies
// on (the package enforces none of them), answering with the status codes and error bodies Cosmos DB sends:
// see LIMITS below. And it can answer with faults on demand, the way Cosmos DB throttles (429 with
// x-ms-retry-after-ms) or fails over (503), so that tests see what a busy account does:
//   POST   /_aiaas/faults {"status": 429, "count": N, "retryAfterMs": M, "path": "regex", "method": "GET"}
//          -> the next N requests whose path matches (default: any document operation) answer `status`
//   GET    /_aiaas/faults -> the fault still armed ({"remaining": n, ...}) or {"remaining": 0}
//   DELETE /_aiaas/faults -> disarms it
//
// Usage: node cosmos_server.js [--host 127.0.0.1] [--port 8081] [--repo-root DIR]
//   env fallbacks: COSMOS_HOST, COSMOS_PORT, AIAAS_REPO_ROOT
// Prints "listening on https://HOST:PORT" once ready. The data is held in memory only.
"use strict";

const path = require("path");
const { randomUUID } = require("crypto");

// Azure Cosmos DB service quotas (https://learn.microsoft.com/azure/cosmos-db/concepts-limits), the ones the
// platform relies on; the README's limits table lists them too.
const LIMITS = {
  // "Maximum request size (for example, stored procedure, CRUD): 2 MB" (per-request limits).
  requestBytes: 2 * 1024 * 1024,
  // "Maximum size of an item: 2 MB (UTF-8 length of JSON representation)" (per-item limits).
  itemBytes: 2 * 1024 * 1024,
  // "Maximum length of ID value: 1023 bytes" (per-item limits).
  idBytes: 1023,
  // "Maximum length of partition key value: 2048 bytes" (101 bytes without large partition keys; every
  // container here is created with PartitionKey version 2, the large kind).
  partitionKeyBytes: 2048,
};
// The service refuses '/' and '\\' in an id; the SDKs refuse '?' and '#' too (they break the item's URL), so
// no client of ours can write one: the stand-in refuses all four.
const FORBIDDEN_ID_CHARS = /[/\\?#]/;
const FAULTS_PATH = "/_aiaas/faults";

function parseArgs(argv) {
  const args = {
    host: process.env.COSMOS_HOST || "127.0.0.1",
    port: process.env.COSMOS_PORT || "8081",
    repoRoot: process.env.AIAAS_REPO_ROOT || path.resolve(__dirname, "..", ".."),
  };
  for (let i = 0; i < argv.length; i += 1) {
    const key = argv[i];
    const value = argv[i + 1];
    switch (key) {
      case "--host":
        args.host = value;
        i += 1;
        break;
      case "-p":
      case "--port":
        args.port = value;
        i += 1;
        break;
      case "--repo-root":
        args.repoRoot = value;
        i += 1;
        break;
      case "-h":
      case "--help":
        console.log("Usage: node cosmos_server.js [--host HOST] [--port PORT] [--repo-root DIR]");
        process.exit(0);
        break;
      default:
        console.error(`unknown argument: ${key}`);
        process.exit(2);
    }
  }
  const port = Number.parseInt(String(args.port), 10);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`invalid port: ${args.port}`);
    process.exit(2);
  }
  args.port = port;
  return args;
}

function loadCosmosServer(repoRoot) {
  let resolved;
  try {
    resolved = require.resolve("@vercel/cosmosdb-server", { paths: [repoRoot] });
  } catch (err) {
    console.error(
      `cannot find @vercel/cosmosdb-server under ${repoRoot}/node_modules (run \`make deps\` / \`npm ci\`): ${err.message}`,
    );
    process.exit(3);
  }
  const libDir = path.dirname(resolved);
  patchReadDocument(libDir);
  patchJsonBody(libDir);
  patchConditionalPatch(libDir);
  return {
    ...require(resolved),
    route: require(path.join(libDir, "routes.js")).default,
    documentWrites: new Set(
      ["create-document", "upsert-document", "replace-document"].map(
        (name) => require(path.join(libDir, "handler", `${name}.js`)).default,
      ),
    ),
    batch: require(path.join(libDir, "handler", "batch-documents.js")).default,
  };
}

// The handlers read their body through lib/json.js; the limit checks read it first, so the body they parsed
// is handed on instead of reading the (already consumed) request stream again.
function patchJsonBody(libDir) {
  const json = require(path.join(libDir, "json.js"));
  const original = json.default;
  if (typeof original !== "function" || original.aiaasPatched) {
    return;
  }
  const patched = async (req) => {
    if (Object.prototype.hasOwnProperty.call(req, "aiaasJson")) {
      return req.aiaasJson;
    }
    if (req.aiaasBody !== undefined) {
      return JSON.parse(req.aiaasBody.toString());
    }
    return original(req);
  };
  patched.aiaasPatched = true;
  json.default = patched;
}

// Must run before index.js/routes.js are loaded: routes.js copies the handler reference at load time.
function patchReadDocument(libDir) {
  const readDocument = require(path.join(libDir, "handler", "read-document.js"));
  const original = readDocument.default;
  if (typeof original !== "function" || original.aiaasPatched) {
    return;
  }
  const patched = (account, req, res, params) => {
    try {
      return original(account, req, res, params);
    } catch (err) {
      // The original indexes into the (undefined) stored document when it does not exist.
      if (err instanceof TypeError && /Cannot read properties of (undefined|null)/.test(err.message)) {
        res.statusCode = 404;
        return {
          code: "NotFound",
          message: "Entity with the specified id does not exist in the system.",
        };
      }
      throw err;
    }
  };
  patched.aiaasPatched = true;
  readDocument.default = patched;
}

// A conditional patch (the SDK's filter_predicate, "from c where ...") is checked by the package with a query over
// the whole container by id, lower-cased: a document of the same id in ANOTHER partition that matches lets the patch
// through (found by the per-tenant rate counters, which share ids across tenants). Cosmos DB evaluates the predicate
// on the target document only, as written; so does this check, by the document's _rid.
function patchConditionalPatch(libDir) {
  const ops = require(path.join(libDir, "handler", "_patch-operations.js"));
  const { parsePartitionKey } = require(path.join(libDir, "utils", "get-partition-from-header.js"));
  const original = ops.patchOperation;
  if (typeof original !== "function" || original.aiaasPatched) {
    return;
  }
  const patched = (collection, input) => {
    const clause = typeof input.condition === "string" ? input.condition.trim() : "";
    const where = clause.match(/^(?:from\s+c\s+)?where\s+([\s\S]+)$/i);
    if (!where) {
      return original(collection, input);
    }
    const data = collection.document(input.id, parsePartitionKey(input.partitionKey, input.id)).read();
    if (!data) {
      return original(collection, input); // its 404
    }
    let matched;
    try {
      matched = collection.documents.query(
        { query: `SELECT * FROM c WHERE c._rid = @rid AND (${where[1]})`, parameters: [{ name: "@rid", value: data._rid }] },
        {},
      ).result;
    } catch (err) {
      return { statusCode: 400, body: { code: "BadRequest", message: "Invalid condition in patch request." } };
    }
    if (matched.length === 0) {
      return {
        statusCode: 412,
        body: { code: "PreconditionFailed", message: "Condition specified in the patch request is not satisfied." },
      };
    }
    return original(collection, { ...input, condition: undefined });
  };
  patched.aiaasPatched = true;
  ops.patchOperation = patched;
}

// An error answer the way Cosmos DB words it: {"code", "message": "Message: {\"Errors\":[...]}\r\nActivityId: ..."}.
function sendCosmosError(req, res, status, code, message, headers = {}) {
  const activityId = randomUUID();
  const body = JSON.stringify({
    code,
    message: `Message: ${JSON.stringify({ Errors: [message] })}\r\nActivityId: ${activityId}, Request URI: ${req.url}`,
  });
  res.statusCode = status;
  res.setHeader("content-type", "application/json");
  res.setHeader("connection", "keep-alive");
  res.setHeader("x-ms-activity-id", activityId);
  res.setHeader("x-ms-request-charge", "0");
  for (const [name, value] of Object.entries(headers)) {
    res.setHeader(name, value);
  }
  res.end(body);
}

function sendJson(res, status, value) {
  res.statusCode = status;
  res.setHeader("content-type", "application/json");
  res.setHeader("connection", "keep-alive");
  res.end(JSON.stringify(value));
}

// Why an id is refused, or null. Cosmos DB's words for every kind of bad id.
function badId(id) {
  const refusal = `The input name '${id}' is invalid. Ensure to provide a unique non-empty string less than '1024' characters.`;
  if (typeof id !== "string" || id.length === 0) {
    return refusal;
  }
  if (FORBIDDEN_ID_CHARS.test(id) || Buffer.byteLength(id, "utf8") > LIMITS.idBytes) {
    return refusal;
  }
  return null;
}

// The partition key header is a JSON array of the key's values (one per level of a hierarchical key).
function partitionKeyTooLarge(req) {
  const header = req.headers["x-ms-documentdb-partitionkey"];
  if (!header) {
    return false;
  }
  let values;
  try {
    values = JSON.parse(Array.isArray(header) ? header[0] : header);
  } catch (err) {
    return false; // the package's own parser answers a malformed header
  }
  return (Array.isArray(values) ? values : [values]).some(
    (value) => typeof value === "string" && Buffer.byteLength(value, "utf8") > LIMITS.partitionKeyBytes,
  );
}

// Checks one item a request writes; sends the refusal and returns true when it breaks a limit.
function refuseItem(req, res, item) {
  if (item === null || typeof item !== "object" || Array.isArray(item)) {
    return false; // not ours to judge: the package answers
  }
  const idProblem = badId(item.id);
  if (idProblem) {
    sendCosmosError(req, res, 400, "BadRequest", idProblem);
    return true;
  }
  if (Buffer.byteLength(JSON.stringify(item), "utf8") > LIMITS.itemBytes) {
    sendCosmosError(req, res, 413, "RequestEntityTooLarge", "Request size is too large");
    return true;
  }
  return false;
}

// Faults on demand: one armed rule at a time, consumed request by request.
const faults = { armed: null };

function faultBody(status) {
  if (status === 429) {
    // Cosmos DB's throttling answer: code "429", substatus 3200 (the request-unit budget is spent).
    return {
      code: "429",
      message:
        "Request rate is large. More Request Units may be needed, so no changes were made. Please retry this " +
        "request later. Learn more: http://aka.ms/cosmosdb-error-429",
      headers: { "x-ms-substatus": "3200" },
    };
  }
  if (status === 503) {
    return {
      code: "ServiceUnavailable",
      message: "Service is currently unavailable. More info: https://aka.ms/cosmosdb-tsg-service-unavailable",
      headers: {},
    };
  }
  return { code: String(status), message: `injected fault ${status}`, headers: {} };
}

function handleFaultsAdmin(req, res, body) {
  if (req.method === "DELETE") {
    faults.armed = null;
    sendJson(res, 200, { remaining: 0 });
    return;
  }
  if (req.method === "GET") {
    const armed = faults.armed;
    sendJson(res, 200, armed ? { ...armed, path: armed.path.source } : { remaining: 0 });
    return;
  }
  if (req.method !== "POST") {
    sendJson(res, 405, { message: "use POST, GET or DELETE" });
    return;
  }
  let spec;
  try {
    spec = JSON.parse(body.toString() || "{}");
  } catch (err) {
    sendJson(res, 400, { message: `not JSON: ${err.message}` });
    return;
  }
  const status = Number(spec.status);
  const count = Number(spec.count === undefined ? 1 : spec.count);
  if (!Number.isInteger(status) || status < 400 || status > 599 || !Number.isInteger(count) || count < 0) {
    sendJson(res, 400, { message: "status must be 400-599 and count a whole number" });
    return;
  }
  let pattern;
  try {
    pattern = new RegExp(spec.path || "/docs(/|$)");
  } catch (err) {
    sendJson(res, 400, { message: `path is not a regular expression: ${err.message}` });
    return;
  }
  faults.armed = {
    status,
    remaining: count,
    retryAfterMs: spec.retryAfterMs === undefined ? null : Number(spec.retryAfterMs),
    path: pattern,
    method: spec.method ? String(spec.method).toUpperCase() : null,
    hits: 0,
  };
  sendJson(res, 201, { ...faults.armed, path: pattern.source });
}

// True (and the answer sent) when an armed fault takes this request.
function injectFault(req, res) {
  const armed = faults.armed;
  if (!armed || armed.remaining <= 0) {
    return false;
  }
  const pathname = (req.url || "").split("?")[0].replace(/\/+$/, ""); // the SDK ends some paths with '/'
  if (!armed.path.test(pathname) || (armed.method && armed.method !== req.method)) {
    return false;
  }
  armed.remaining -= 1;
  armed.hits += 1;
  const { code, message, headers } = faultBody(armed.status);
  const extra = { ...headers };
  if (armed.retryAfterMs !== null) {
    extra["x-ms-retry-after-ms"] = String(armed.retryAfterMs);
  }
  sendCosmosError(req, res, armed.status, code, message, extra);
  return true;
}

// Runs before the package's handler: reads the whole body once, answers faults and limit breaches the way
// Cosmos DB does, and hands everything else on with the body it read (see patchJsonBody).
function guard(stand, handle) {
  return (req, res) => {
    const chunks = [];
    let received = 0;
    req.on("data", (chunk) => {
      received += chunk.length;
      if (received <= LIMITS.requestBytes + 1) {
        chunks.push(chunk); // past the limit the body is drained, not kept
      }
    });
    req.on("error", (err) => {
      console.error(`request stream error: ${err.message}`);
    });
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const pathname = (req.url || "").split("?")[0];
      if (pathname === FAULTS_PATH) {
        handleFaultsAdmin(req, res, body);
        return;
      }
      if (injectFault(req, res)) {
        return;
      }
      if (received > LIMITS.requestBytes) {
        sendCosmosError(req, res, 413, "RequestEntityTooLarge", "Request size is too large");
        return;
      }
      if (partitionKeyTooLarge(req)) {
        sendCosmosError(req, res, 400, "BadRequest", "Partition key value is too large");
        return;
      }
      req.aiaasBody = body;
      const matched = stand.route(req);
      const handler = matched && matched[1];
      if (handler && (stand.documentWrites.has(handler) || handler === stand.batch) && body.length > 0) {
        let parsed;
        try {
          parsed = JSON.parse(body.toString());
        } catch (err) {
          sendCosmosError(req, res, 400, "BadRequest", "The request payload is invalid. Ensure to provide a valid request payload.");
          return;
        }
        req.aiaasJson = parsed;
        const items = handler === stand.batch && Array.isArray(parsed)
          ? parsed.map((operation) => operation && operation.resourceBody).filter((item) => item !== undefined)
          : [parsed];
        for (const item of items) {
          if (refuseItem(req, res, item)) {
            return;
          }
        }
      }
      handle(req, res);
    });
  };
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const stand = loadCosmosServer(args.repoRoot);

  const server = stand.createHttpsServer({ keepAlive: true });
  // The package's request listener runs behind the guard (limits and faults), never directly.
  const [handle] = server.listeners("request");
  server.removeAllListeners("request");
  server.on("request", guard(stand, handle));
  // Idle keep-alive sockets stay open for 10 minutes; headersTimeout must exceed keepAliveTimeout.
  server.keepAliveTimeout = 600 * 1000;
  server.headersTimeout = 601 * 1000;
  server.requestTimeout = 0;

  server.on("error", (err) => {
    console.error(`cosmos stand-in server error: ${err.stack || err}`);
    process.exit(1);
  });
  server.on("tlsClientError", (err) => {
    console.error(`tls client error: ${err.message}`);
  });

  server.listen(args.port, args.host, () => {
    const { port } = server.address();
    const host = args.host.includes(":") ? `[${args.host}]` : args.host;
    console.log(`listening on https://${host}:${port}`);
  });

  const shutdown = (signal) => {
    console.log(`received ${signal}, shutting down`);
    server.close(() => process.exit(0));
    if (typeof server.closeAllConnections === "function") {
      server.closeAllConnections();
    }
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
}

main();
