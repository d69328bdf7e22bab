// Showing the device-flow prompt. On a terminal: the URI, the code, a QR code of the complete URI
// and a live countdown. Otherwise one `key: value` line per fact, for programs (and tests) to parse.
import { create as createQr } from 'qrcode';
import type { DevicePrompt } from '../enroll/device-flow.ts';

export interface Output {
  write(s: string): unknown;
  readonly isTTY?: boolean;
}

/** A QR code drawn with half blocks (two modules per character cell), light on dark terminals'
 *  own background: dark modules are spaces, with a quiet zone of two modules all round. */
export function renderQr(text: string): string {
  const m = createQr(text, { errorCorrectionLevel: 'L' }).modules;
  const quiet = 2;
  const n = m.size + 2 * quiet;
  const dark = (r: number, c: number): boolean => {
    const rr = r - quiet;
    const cc = c - quiet;
    return rr >= 0 && cc >= 0 && rr < m.size && cc < m.size && m.get(rr, cc) === 1;
  };
  const lines: string[] = [];
  for (let r = 0; r < n; r += 2) {
    let line = '';
    for (let c = 0; c < n; c++) {
      const top = !dark(r, c);
      const bottom = r + 1 < n ? !dark(r + 1, c) : false;
      line += top && bottom ? '█' : top ? '▀' : bottom ? '▄' : ' ';
    }
    lines.push(line);
  }
  return lines.join('\n') + '\n';
}

/** What the IdP sent, made safe for a terminal and for line-oriented readers: no control
 *  characters (escape sequences, newlines) get through. */
export function printable(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

export function formatRemaining(seconds: number): string {
  const s = Math.max(0, Math.ceil(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

/** The plain lines, exactly one per fact. */
export function plainPromptLines(p: DevicePrompt): string[] {
  return [
    `verification_uri: ${printable(p.verificationUri)}`,
    `user_code: ${printable(p.userCode)}`,
    ...(p.verificationUriComplete === undefined ? [] : [`verification_uri_complete: ${printable(p.verificationUriComplete)}`]),
    `expires_in: ${p.expiresIn}`,
  ];
}

export interface PromptView {
  show(p: DevicePrompt): void;
  /** Stops the countdown; safe to call more than once, or without show(). */
  done(): void;
}

export function promptView(out: Output, opts: { now?: () => number; tickMs?: number } = {}): PromptView {
  const now = opts.now ?? Date.now;
  let timer: NodeJS.Timeout | undefined;
  return {
    show(p) {
      if (out.isTTY !== true) {
        out.write(plainPromptLines(p).join('\n') + '\n');
        return;
      }
      let text = `\nTo enroll this host, open\n\n    ${printable(p.verificationUri)}\n\nand enter the code\n\n    ${printable(p.userCode)}\n\n`;
      if (p.verificationUriComplete !== undefined) {
        text += `or scan this QR code, which opens ${printable(p.verificationUriComplete)}\n\n${renderQr(p.verificationUriComplete)}\n`;
      }
      out.write(text);
      const tick = (): void => {
        const left = p.expiresIn - (now() - p.issuedAt) / 1000;
        out.write(`\r\x1b[KWaiting for approval; the code expires in ${formatRemaining(left)}`);
      };
      tick();
      timer = setInterval(tick, opts.tickMs ?? 1000);
      timer.unref();
    },
    done() {
      if (timer === undefined) return;
      clearInterval(timer);
      timer = undefined;
      out.write('\r\x1b[K');
    },
  };
}
