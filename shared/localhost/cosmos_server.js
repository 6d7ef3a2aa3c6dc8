#!/usr/bin/env node
// Serves @vercel/cosmosdb-server (the local Cosmos DB stand-in) over HTTPS with HTTP keep-alive.
//
// The package's own CLI (`cosmosdb-server`) builds its request handler with keepAlive=false, which
// makes every response carry `connection: close`: each SDK call then pays a fresh TCP + TLS
// handshake (~30 ms). createHttpsServer() accepts `keepAlive: true`, which makes the handler send
// `connection: keep-alive` instead; we also lengthen Node's idle keep-alive timeout (default 5 s)
// so pooled client connections are not dropped between test steps.
//
// It also patches one stand-in bug: reading a missing document in a container with a hierarchical
// (MultiHash) partition key crashed the handler (500 "Cannot read properties of undefined") instead of
// answering 404 NotFound. node_modules is not edited; the handler module is patched before the routes
// table is built.
//
// Usage: node cosmos_server.js [--host 127.0.0.1] [--port 8081] [--repo-root DIR]
//   env fallbacks: COSMOS_HOST, COSMOS_PORT, AIAAS_REPO_ROOT
// Prints "listening on https://HOST:PORT" once ready. The data is held in memory only.
"use strict";

const path = require("path");

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
  patchReadDocument(path.dirname(resolved));
  return require(resolved);
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

function main() {
  const args = parseArgs(process.argv.slice(2));
  const { createHttpsServer } = loadCosmosServer(args.repoRoot);

  const server = createHttpsServer({ keepAlive: true });
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
