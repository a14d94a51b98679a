import neostandard from 'neostandard'

export default neostandard({
  ts: true,
  ignores: ['dist/**', 'node_modules/**', 'data/**', 'test-results/**', 'public/build/**', 'examples/collab/textarea.bundle.js']
})
