// Scores http-cache-tests results by kind, with the suite's own verdict function
// (lib/display.mjs determineTestResult, dependencies honoured), and lists the tests whose
// verdict differs from a baseline's.
//
//   node score.mjs results/floodgate.json [results/nginx.json]

import fs from 'fs'
import tests from 'http-cache-tests/tests/index.mjs'
import surrogate from 'http-cache-tests/tests/surrogate-control.mjs'
import * as display from 'http-cache-tests/lib/display.mjs'

tests.push(surrogate)

const ORDER = ['✅', '⛔️', '⚠️', 'Y', 'N', '🔹', '⁉️', '⚪️', '↻', '-']
const NAMES = {
  '✅': 'pass',
  '⛔️': 'required failure',
  '⚠️': 'optimal failure',
  Y: 'check: yes',
  N: 'check: no',
  '🔹': 'setup failure',
  '⁉️': 'harness failure',
  '⚪️': 'dependency failure',
  '↻': 'retried',
  '-': 'untested'
}

function verdicts (file) {
  const results = JSON.parse(fs.readFileSync(file, 'utf8'))
  const out = new Map()
  for (const suite of tests) {
    for (const test of suite.tests) {
      const symbol = display.determineTestResult(tests, test.id, results)[2] || '-'
      out.set(test.id, { symbol, kind: test.kind || 'required' })
    }
  }
  return out
}

function tally (v) {
  const counts = Object.fromEntries(ORDER.map(s => [s, 0]))
  for (const { symbol } of v.values()) counts[symbol] = (counts[symbol] || 0) + 1
  return counts
}

const files = process.argv.slice(2)
if (files.length === 0) {
  console.error('usage: node score.mjs RESULTS.json [BASELINE.json]')
  process.exit(2)
}
const all = files.map(f => ({ file: f, v: verdicts(f) }))
const rows = all.map(({ file, v }) => ({ file, counts: tally(v) }))
console.log(['verdict', ...rows.map(r => r.file)].join(' | '))
for (const s of ORDER) {
  if (rows.every(r => r.counts[s] === 0)) continue
  console.log([`${s} ${NAMES[s]}`, ...rows.map(r => String(r.counts[s]))].join(' | '))
}
if (all.length > 1) {
  const [ours, base] = all
  console.log(`\nTests whose verdict differs (${ours.file} vs ${base.file}):`)
  for (const [id, { symbol, kind }] of ours.v) {
    const theirs = base.v.get(id)?.symbol
    if (theirs !== symbol) console.log(`  ${id} (${kind}): ${symbol} vs ${theirs}`)
  }
}
