// Validates an AsyncAPI document with @asyncapi/parser (the official parser and its Spectral
// ruleset). Prints every diagnostic; exits 1 when any is an error or a warning.
//   node tests/describe/validate.mjs docs/describe/asyncapi.json
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const file = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(file, "utf8"), { source: file });
// Spectral severities: 0 error, 1 warning, 2 information, 3 hint.
const serious = diagnostics.filter((d) => d.severity <= 1);
for (const d of diagnostics) {
  console.log(`${file}: ${["error", "warning", "info", "hint"][d.severity]}: ${d.code}: ${d.message} at /${d.path.join("/")}`);
}
if (!document || serious.length > 0) {
  process.exit(1);
}
console.log(`${file}: valid AsyncAPI ${document.version()}, ${document.channels().length} channels, ${document.operations().length} operations`);
