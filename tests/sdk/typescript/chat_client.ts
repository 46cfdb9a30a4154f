// A chat client on the official TypeScript SDK (@clockworklabs/spacetimedb-sdk 1.3.3), with
// bindings made by `spacetime generate` from the `chat` fixture. Run by
// crates/cli/tests/official_sdks.rs against a live Epoch server: it connects, subscribes, calls
// reducers and prints what it observed as JSON lines; the test checks them.
import { DbConnection } from './module_bindings';

const [uri, dbName, handle] = process.argv.slice(2);
const say = (event: string, data: unknown = {}) => console.log(JSON.stringify({ event, ...(data as object) }));
const fail = (why: string) => {
  say('error', { why });
  process.exit(1);
};
setTimeout(() => fail('timed out'), 30_000);

let step = 0;
// SDK 1.3.3 reports every close, a clean one too, as a connect error: ignore it once leaving.
let leaving = false;
const conn = DbConnection.builder()
  .withUri(uri)
  .withModuleName(dbName)
  .onConnect((conn, identity) => {
    say('connected', { identity: identity.toHexString() });
    conn.db.post.onInsert((_ctx, row) => say('post_insert', { body: row.body }));
    conn.db.post.onDelete((_ctx, row) => say('post_delete', { body: row.body }));
    conn.db.member.onUpdate((_ctx, old, row) =>
      say('member_update', { old: old.handle ?? null, handle: row.handle ?? null, online: row.online }),
    );
    conn.reducers.onSendPost((ctx, body) => {
      const status = ctx.event.status;
      say('send_post', { body, status: status.tag, message: status.tag === 'Failed' ? status.value : null });
      next();
    });
    conn.reducers.onRetract((ctx, id) => {
      say('retract', { id: id.toString(), status: ctx.event.status.tag });
      next();
    });
    conn.reducers.onSetHandle((ctx, h) => {
      say('set_handle', { handle: h, status: ctx.event.status.tag });
      next();
    });
    conn
      .subscriptionBuilder()
      .onApplied(() => {
        say('applied', {
          posts: [...conn.db.post.iter()].map(p => p.body).sort(),
          members: conn.db.member.count(),
        });
        next();
      })
      .onError(() => fail('subscription error'))
      .subscribe(['SELECT * FROM post', 'SELECT * FROM member']);
  })
  .onConnectError((_ctx, err) => {
    if (!leaving) fail(`connect error: ${err}`);
  })
  .build();

// Each step runs once the previous one's outcome arrived.
function next() {
  step += 1;
  switch (step) {
    case 1:
      return conn.reducers.setHandle(handle);
    case 2:
      return conn.reducers.sendPost(`hello from ${handle}`);
    case 3:
      return conn.reducers.sendPost('');
    case 4:
      return conn.reducers.sendPost(`bye from ${handle}`);
    case 5: {
      const bye = [...conn.db.post.iter()].find(p => p.body === `bye from ${handle}`);
      if (!bye) return fail('the second post is not in the cache');
      return conn.reducers.retract(bye.id);
    }
    case 6:
      say('cached', { posts: [...conn.db.post.iter()].map(p => p.body).sort() });
      leaving = true;
      conn.disconnect();
      return setTimeout(() => process.exit(0), 200);
  }
}
