#!/usr/bin/env node
// Validates hookbridge's golden chat payloads with the services' own libraries:
//
//   - Slack: each golden with `blocks` is type-checked against `KnownBlock[]` from
//     @slack/types with the TypeScript compiler (strict, excess properties are errors);
//   - Teams: each Adaptive Card attachment is parsed and validated by the `adaptivecards`
//     package (any parse or validation event is a failure).
//
// Each checker first proves it can fail: a known-bad payload must be refused.
//
//   node check.js GOLDEN_DIR
//
// Prints one line per check and, last, "chat-payloads: N passed, M failed";
// exits 1 when a check fails.
"use strict";

const fs = require("fs");
const path = require("path");
const ts = require("typescript");
const AC = require("adaptivecards/dist/adaptivecards.js");

const goldenDir = path.resolve(process.argv[2] || path.join(__dirname, "..", "..", "tests", "golden"));
const generatedDir = path.join(__dirname, ".generated");

let passed = 0;
let failed = 0;

function report(name, problems) {
  if (problems.length === 0) {
    passed += 1;
    console.log(`ok    ${name}`);
  } else {
    failed += 1;
    console.log(`FAIL  ${name}`);
    for (const p of problems) {
      console.log(`      | ${p}`);
    }
  }
}

function version(pkg) {
  const file = path.join(__dirname, "node_modules", ...pkg.split("/"), "package.json");
  return JSON.parse(fs.readFileSync(file, "utf8")).version;
}

// --- Slack: tsc against @slack/types -----------------------------------------------------

// A JSON module import would widen every string to `string` ("section" stops being the
// literal the KnownBlock union is discriminated on), so the payload is written into a
// .ts file as an object literal under the type annotation instead: its strings keep
// their literal types and unknown properties are reported.
function slackSource(payload, origin) {
  return [
    `// Generated from ${origin} by scripts/check-chat-payloads.sh; not edited by hand.`,
    `import type { KnownBlock } from "@slack/types";`,
    `export const text: string = ${JSON.stringify(payload.text)};`,
    `export const blocks: KnownBlock[] = ${JSON.stringify(payload.blocks, null, 2)};`,
    ``,
  ].join("\n");
}

function typeCheck(files) {
  const program = ts.createProgram(files, {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2020,
    module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.Node10,
    skipLibCheck: true,
    types: [],
  });
  const byFile = new Map(files.map((f) => [path.resolve(f), []]));
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(d.messageText, "\n");
    if (d.file) {
      const { line, character } = d.file.getLineAndCharacterOfPosition(d.start || 0);
      const list = byFile.get(path.resolve(d.file.fileName));
      const text = `${path.basename(d.file.fileName)}:${line + 1}:${character + 1}: ${message}`;
      (list || byFile.values().next().value).push(text);
    } else {
      byFile.values().next().value.push(message);
    }
  }
  return byFile;
}

// --- Teams: the adaptivecards library -----------------------------------------------------

function adaptiveCardProblems(card) {
  const problems = [];
  const context = new AC.SerializationContext();
  const parsed = new AC.AdaptiveCard();
  parsed.parse(card, context);
  for (let i = 0; i < context.eventCount; i++) {
    const e = context.getEventAt(i);
    problems.push(`parse: ${AC.ValidationEvent[e.event]}: ${e.message}`);
  }
  for (const e of parsed.validateProperties().validationEvents) {
    problems.push(`validate: ${AC.ValidationEvent[e.event]}: ${e.message}`);
  }
  return problems;
}

function teamsEnvelopeProblems(payload) {
  const problems = [];
  if (payload.type !== "message") problems.push(`type is ${JSON.stringify(payload.type)}, not "message"`);
  if (!Array.isArray(payload.attachments) || payload.attachments.length === 0) problems.push("no attachments");
  return problems;
}

// --- run ----------------------------------------------------------------------------------

fs.rmSync(generatedDir, { recursive: true, force: true });
fs.mkdirSync(generatedDir, { recursive: true });

const goldens = fs
  .readdirSync(goldenDir)
  .filter((f) => f.endsWith(".json"))
  .sort()
  .map((f) => ({ name: f, payload: JSON.parse(fs.readFileSync(path.join(goldenDir, f), "utf8")) }));

// Slack goldens, plus one that must be refused (a section whose text object has no valid type).
const slackChecks = goldens
  .filter((g) => Array.isArray(g.payload.blocks))
  .map((g) => ({ label: `tests/golden/${g.name}: blocks are KnownBlock[] (@slack/types ${version("@slack/types")}, tsc ${ts.version})`, payload: g.payload, origin: `tests/golden/${g.name}`, expectFailure: false }));
slackChecks.push({
  label: "tsc refuses a malformed block (checker self-test)",
  payload: { text: "x", blocks: [{ type: "section", text: { type: "markdown", text: "x" }, colour: "red" }] },
  origin: "a deliberately malformed block",
  expectFailure: true,
});
const files = slackChecks.map((c, i) => {
  const file = path.join(generatedDir, `slack_${i}.ts`);
  fs.writeFileSync(file, slackSource(c.payload, c.origin));
  return file;
});
const diagnostics = typeCheck(files);
slackChecks.forEach((c, i) => {
  const found = diagnostics.get(path.resolve(files[i])) || [];
  if (c.expectFailure) {
    report(c.label, found.length > 0 ? [] : ["tsc accepted it"]);
  } else {
    report(c.label, found);
  }
});

// Adaptive Cards in Teams goldens, plus one that must be refused.
for (const g of goldens) {
  const attachments = Array.isArray(g.payload.attachments) ? g.payload.attachments : [];
  const cards = attachments.filter((a) => a.contentType === "application/vnd.microsoft.card.adaptive");
  if (cards.length === 0) continue;
  const problems = teamsEnvelopeProblems(g.payload);
  cards.forEach((a, i) => {
    for (const p of adaptiveCardProblems(a.content)) problems.push(`card ${i}: ${p}`);
  });
  report(`tests/golden/${g.name}: Adaptive Card parses and validates (adaptivecards ${version("adaptivecards")})`, problems);
}
{
  const bad = {
    type: "AdaptiveCard",
    version: "1.4",
    body: [{ type: "TextBlock", text: "x", size: "Huge" }, { type: "Container", style: "attention", items: [] }],
    actions: [{ type: "Action.OpenUrl", title: "no url" }],
  };
  report("adaptivecards refuses a malformed card (checker self-test)", adaptiveCardProblems(bad).length > 0 ? [] : ["adaptivecards accepted it"]);
}

if (passed + failed === 0) {
  console.log(`no golden payloads found in ${goldenDir}`);
  failed += 1;
}
console.log(`chat-payloads: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
