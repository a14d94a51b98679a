export interface Prerequisite {
  /** Whether the tool is there. */
  present: boolean
  /** What is missing, e.g. "redis-server is not installed". */
  missing: string
  /** Which tests it skips, e.g. "the Redis tests". */
  tests: string
  /** How to install it. */
  install: string
  /** The variable that turns the skip into a failure (CI sets it to 1). */
  requireVar: string
}

/**
 * tap options for tests that need a tool of the machine (redis-server,
 * Chromium): skipped with a loud reason when it is missing, except when
 * `requireVar`=1 (CI), where the test runs and fails on the missing tool.
 */
export function prerequisiteOptions (p: Prerequisite): { skip?: string } {
  if (p.present || process.env[p.requireVar] === '1') return {}
  const reason = `!!! ${p.missing}: ${p.tests} are SKIPPED (${p.install}; CI sets ${p.requireVar}=1 to fail instead) !!!`
  process.stderr.write(`\n${reason}\n\n`)
  return { skip: reason }
}

/** Debian's chromium by default; CHROMIUM_PATH points elsewhere (or, to check the skip, at nothing). */
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'

/** Headless Chromium flags for the browser tests. */
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run']

/** tap options for a browser test: skipped loudly without Chromium, failed in CI (REQUIRE_BROWSER=1). */
export function browserTestOptions (present: boolean): { skip?: string } {
  return prerequisiteOptions({
    present,
    missing: `Chromium is not installed at ${CHROMIUM}`,
    tests: 'the browser tests',
    install: 'apt-get install chromium, or set CHROMIUM_PATH',
    requireVar: 'REQUIRE_BROWSER'
  })
}
