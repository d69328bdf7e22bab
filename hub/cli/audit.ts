// sepal-hub audit verify: walks the hash chain in pages (constant memory) and names the first
// entry that was edited, removed or moved. Exit 1 with AUDIT_CHAIN_BROKEN when the chain breaks.
import { ErrorCodes } from '../../proto/errors.ts';
import { GENESIS_HASH, verifyAuditChain } from '../audit/chain.ts';
import { SepalError } from '../errors.ts';
import { parse, UsageError } from './args.ts';
import { COMMON, out, pathsFrom, withHub } from './common.ts';

const PAGE = 5000;

export async function cmdAudit(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'verify') throw new UsageError('audit: expected verify');
  const { values: v } = parse(rest, COMMON);
  return withHub(pathsFrom(v), async (hub) => {
    let from = { seq: 0, hash: GENESIS_HASH };
    let count = 0;
    for (;;) {
      const page = await hub.ctx.store.readAudit(from.seq, PAGE);
      const r = verifyAuditChain(page, from);
      if (!r.ok) {
        if (v.json === true) out(JSON.stringify({ ok: false, firstBadSeq: r.firstBadSeq, reason: r.reason, verified: count + r.firstBadSeq - from.seq - 1 }));
        throw new SepalError(ErrorCodes.AUDIT_CHAIN_BROKEN, `audit log entry ${r.firstBadSeq} is bad (${r.reason}); entries before it verify`, { detail: { firstBadSeq: r.firstBadSeq, reason: r.reason } });
      }
      count += r.count;
      if (page.length < PAGE) {
        if (v.json === true) out(JSON.stringify({ ok: true, entries: count, headHash: r.headHash }));
        else out(`audit log OK: ${count} entries, head ${r.headHash}`);
        return 0;
      }
      const last = page[page.length - 1];
      if (last === undefined) return 0;
      from = { seq: last.seq, hash: r.headHash };
    }
  });
}
