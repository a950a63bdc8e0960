// Compares a run's results with the committed ones: a test that passed before and does not
// now fails the comparison (and CI). New passes are reported, never a failure.
//
//   node compare.mjs results/floodgate.json "$work/results/floodgate.json"

import fs from 'fs'

const [before, after] = process.argv.slice(2).map(f => JSON.parse(fs.readFileSync(f, 'utf8')))
const lost = Object.keys(before).filter(k => before[k] === true && after[k] !== true)
const gained = Object.keys(after).filter(k => after[k] === true && before[k] !== true)
for (const k of gained) console.log(`now passing: ${k}`)
if (lost.length > 0) {
  for (const k of lost) console.error(`newly failing: ${k}: ${JSON.stringify(after[k])}`)
  process.exit(1)
}
console.log(`no regression (${Object.values(after).filter(v => v === true).length} passing)`)
