// Prints, last, every failed test of every pass: CI's record keeps only the tail of the output, so
// a failure far above it would otherwise be known only by the exit code.
import { readFileSync } from 'node:fs';

let failed = 0;
for (const arg of process.argv.slice(2)) {
  const [label, file] = arg.split('=');
  let report;
  try {
    report = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    console.log(`${label}: no report (the pass did not finish)`);
    failed += 1;
    continue;
  }
  console.log(
    `${label}: ${report.numPassedTests} passed, ${report.numFailedTests} failed, ` +
      `${report.numPendingTests + report.numTodoTests} skipped`,
  );
  for (const suite of report.testResults) {
    const file = suite.name.replace(`${process.cwd()}/`, '');
    const tests = suite.assertionResults.filter((t) => t.status === 'failed');
    if (tests.length === 0 && suite.status === 'failed') {
      failed += 1;
      console.log(`  FAILED ${file} (the file itself): ${firstLines(suite.message)}`);
    }
    for (const t of tests) {
      failed += 1;
      console.log(`  FAILED ${file} > ${t.fullName}: ${firstLines(t.failureMessages.join('\n'))}`);
    }
  }
}
if (failed === 0) console.log('no test failed');

function firstLines(text = '') {
  return text.split('\n').slice(0, 4).map((l) => l.trim()).filter(Boolean).join(' | ').slice(0, 600);
}
