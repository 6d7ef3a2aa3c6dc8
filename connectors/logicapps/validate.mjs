// Validates a Swagger 2.0 file with @apidevtools/swagger-parser (the schema, $refs, path parameters, unique
// operationIds); prints {"valid": true, "operations": [...]} or {"valid": false, "error": "..."}; exit 0 or 1.
import SwaggerParser from "@apidevtools/swagger-parser";

const file = process.argv[2];
try {
  const api = await SwaggerParser.validate(file);
  const operations = [];
  for (const [path, item] of Object.entries(api.paths)) {
    for (const [method, op] of Object.entries(item)) {
      if (op && typeof op === "object" && op.operationId) {
        operations.push({ path, method, operationId: op.operationId });
      }
    }
  }
  console.log(JSON.stringify({ valid: true, operations }));
} catch (err) {
  console.log(JSON.stringify({ valid: false, error: String(err.message) }));
  process.exitCode = 1;
}
