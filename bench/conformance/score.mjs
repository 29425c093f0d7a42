// Counts a results file the suite's CLI wrote, as cache-tests.fyi does: per kind
// (required, optimal, check), each test on its own and with its dependencies honoured.
// Usage: node score.mjs CACHE_TESTS_CLONE results.json [more.json ...]
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const clone = path.resolve(process.argv[2])
const { default: suites } = await import(pathToFileURL(path.join(clone, 'tests/index.mjs')))
const { determineTestResult } = await import(
  pathToFileURL(path.join(clone, 'test-engine/lib/results.mjs')))
for (const file of process.argv.slice(3)) {
  const results = JSON.parse(fs.readFileSync(file))
  const counts = {}
  const failed = []
  for (const suite of suites) {
    for (const test of suite.tests) {
      if (test.browser_only) continue
      const kind = test.kind || 'required'
      for (const deps of [false, true]) {
        const symbol = determineTestResult(suites, test.id, results, deps)[2]
        const key = kind + (deps ? ' (dependencies honoured)' : '')
        counts[key] = counts[key] || [0, 0]
        counts[key][1]++
        if (symbol === '✅' || symbol === 'Y') counts[key][0]++
        else if (kind === 'required' && !deps) failed.push(test.id)
      }
    }
  }
  console.log(file)
  for (const [key, [passed, all]] of Object.entries(counts)) console.log(`  ${key}: ${passed} / ${all}`)
  console.log('  required, failed: ' + failed.join(', '))
}
