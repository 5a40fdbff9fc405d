// Manual check of editors/specc.tmLanguage.json with the engine VS Code uses (not part of the test
// suite, which needs only PyPI). From the repository root:
//
//   npm install --prefix /tmp/tm vscode-textmate vscode-oniguruma
//   NODE_PATH=/tmp/tm/node_modules node editors/check_grammar.cjs specs/*.model [--dump]
//
// For each file: every line tokenizes, the rule stack is back at the top level at the end (each
// `{`, `(`, `[` region closed), and keywords, comments, numbers, strings, `->`, calls, setting keys
// and block names carry their scopes. `--dump` prints each token with its scopes.
const fs = require("fs");
const path = require("path");
const tm = require("vscode-textmate");
const onig = require("vscode-oniguruma");

const grammarPath = path.join(__dirname, "specc.tmLanguage.json");
const wasm = fs.readFileSync(require.resolve("vscode-oniguruma/release/onig.wasm"));
const expected = [  // [regex on a token's text, scope it must carry, where it applies]
  [/^(model|block|input|output|repeat|parallel|branch)$/, "keyword.control", /./],
  [/^#/, "comment.line.number-sign", /./],
  [/^[0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?$/, "constant.numeric", /./],
  [/^(true|false|none)$/, "constant.language", /./],
  [/^->$/, "keyword.operator", /./],
];

async function main() {
  const args = process.argv.slice(2);
  const dump = args.includes("--dump");
  const files = args.filter((a) => a !== "--dump");
  await onig.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));
  const registry = new tm.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (patterns) => new onig.OnigScanner(patterns),
      createOnigString: (s) => new onig.OnigString(s),
    }),
    loadGrammar: async () => tm.parseRawGrammar(fs.readFileSync(grammarPath, "utf8"), grammarPath),
  });
  const grammar = await registry.loadGrammar("source.specc");
  let failures = 0;
  for (const file of files) {
    let stack = tm.INITIAL;
    const lines = fs.readFileSync(file, "utf8").split(/\r?\n/);
    lines.forEach((line, i) => {
      const result = grammar.tokenizeLine(line, stack);
      for (const tok of result.tokens) {
        const text = line.slice(tok.startIndex, tok.endIndex);
        const scopes = tok.scopes.join(" ");
        if (dump) console.log(`${file}:${i + 1}: ${JSON.stringify(text)} ${tok.scopes.slice(1).join(" ")}`);
        for (const [pattern, scope] of expected) {
          if (pattern.test(text.trim()) && !scopes.includes(scope) && !scopes.includes("comment")
              && !scopes.includes("string")) {
            console.log(`${file}:${i + 1}: ${JSON.stringify(text)} lacks ${scope} (has ${scopes})`);
            failures++;
          }
        }
      }
      stack = result.ruleStack;
    });
    if (stack.depth !== 1) {
      console.log(`${file}: ends inside a region (rule stack depth ${stack.depth})`);
      failures++;
    }
  }
  console.log(`${files.length} files, ${failures} problems`);
  process.exit(failures ? 1 : 0);
}

main().catch((err) => { console.error(err); process.exit(2); });
