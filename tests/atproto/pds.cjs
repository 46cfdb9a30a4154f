// A real AT Protocol PDS for Epoch's tests: @atproto/dev-env's TestNetworkNoAppView (an
// in-memory PLC and a PDS on SQLite). Prints one JSON line {"pds": URL, "plc": URL} once it
// serves, then takes JSON lines on stdin: {"backfillLimitMs": N} sets the firehose's replay
// window (the PDS reads it on every subscribeRepos request; older events answer OutdatedCursor).
// Ends when stdin closes. Run with Node 22 and NODE_PATH at the installed node_modules.
const { TestNetworkNoAppView } = require('@atproto/dev-env')
const readline = require('node:readline')

async function main() {
  const port = Number(process.env.PDS_PORT) || undefined
  const network = await TestNetworkNoAppView.create({ pds: port ? { port } : {}, plc: {} })
  process.stdout.write(JSON.stringify({ pds: network.pds.url, plc: network.plc.url }) + '\n')
  const lines = readline.createInterface({ input: process.stdin })
  lines.on('line', (line) => {
    try {
      const cmd = JSON.parse(line)
      if (cmd.backfillLimitMs !== undefined) {
        network.pds.server.ctx.cfg.subscription.repoBackfillLimitMs = Number(cmd.backfillLimitMs)
      }
      process.stdout.write(JSON.stringify({ ok: true }) + '\n')
    } catch (e) {
      process.stdout.write(JSON.stringify({ error: String(e) }) + '\n')
    }
  })
  lines.on('close', async () => {
    await network.close().catch(() => {})
    process.exit(0)
  })
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + '\n')
  process.exit(1)
})
