// Fixtures for the agent VPN unit tests (not a test file itself): a tls-crypt key file in OpenVPN's
// format, and a stand-in `openvpn` that speaks the management protocol on the socket the config
// names (the real OpenVPN runs in test/unit/agent-vpn-config.test.ts and the e2e VPN test).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/** A tls-crypt key file as `openvpn --genkey tls-crypt` writes it (256 random bytes, 16 hex lines). */
export function tlsCryptKeyFile(): string {
  const hex = crypto.randomBytes(256).toString('hex');
  const lines = hex.match(/.{32}/g) ?? [];
  return `#\n# 2048 bit OpenVPN static key\n#\n-----BEGIN OpenVPN Static key V1-----\n${lines.join('\n')}\n-----END OpenVPN Static key V1-----\n`;
}

/**
 * Writes <dir>/openvpn: reads `--config FILE`, records its argv in <dir>/launches, listens on the
 * config's management socket and walks WAIT..CONNECTED shortly after start. SIGUSR1 through the
 * management interface records the second line of the cert file in <dir>/usr1-certs, then
 * reconnects. Byte counts follow every 100 ms once asked for. <dir>/mode (read at start) changes the script: `auth-failed` verifies the server and
 * then fails the handshake (tls-error), retrying until a management client saw an attempt; `garbage` answers every command with junk first.
 */
export function writeFakeOpenvpn(dir: string): string {
  const file = path.join(dir, 'openvpn');
  fs.writeFileSync(file, `#!${process.execPath}
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const here = ${JSON.stringify(dir)};
const modeFile = path.join(here, 'mode');
const mode = fs.existsSync(modeFile) ? fs.readFileSync(modeFile, 'utf8').trim() : 'ok';
const cfgPath = process.argv[process.argv.indexOf('--config') + 1];
const cfg = fs.readFileSync(cfgPath, 'utf8');
fs.appendFileSync(path.join(here, 'launches'), JSON.stringify(process.argv.slice(2)) + '\\n');
const sock = /^management "(.*)" unix$/m.exec(cfg)[1];
const certPath = /^cert "(.*)"$/m.exec(cfg)[1];
let state = 'CONNECTING';
const conns = new Set();
const now = () => Math.floor(Date.now() / 1000);
const send = (l) => { for (const c of conns) c.write(l + '\\r\\n'); };
const setState = (s, d = '') => { state = s; send('>STATE:' + now() + ',' + s + ',' + d + ',10.8.0.2,127.0.0.1,1194,,'); };
function connect() {
  setState('WAIT'); setState('AUTH');
  send('>LOG:' + now() + ',,VERIFY OK: depth=0, CN=vpn-server');
  // OpenVPN retries a failed handshake (connect-retry); the fake retries only until a management
  // client has watched one whole attempt, so one that attaches late (a loaded machine) still sees it.
  if (mode === 'auth-failed') {
    const watched = conns.size > 0;
    setTimeout(() => { setState('RECONNECTING', 'tls-error'); if (!watched) setTimeout(connect, 300); }, 50);
    return;
  }
  setState('GET_CONFIG'); setState('ASSIGN_IP'); setState('ADD_ROUTES'); setState('CONNECTED', 'SUCCESS');
  send('>BYTECOUNT:1000,2000');
}
function quit() { send('>STATE:' + now() + ',EXITING,SIGTERM,,,,,'); try { fs.unlinkSync(sock); } catch {} process.exit(0); }
function handle(c, cmd) {
  if (mode === 'garbage') c.write('this is not a reply\\r\\n>NONSENSE\\r\\n>STATE:x,y\\r\\n');
  if (cmd === 'state on') c.write('SUCCESS: real-time state notification set to ON\\r\\n');
  else if (cmd === 'log on') c.write('SUCCESS: real-time log notification set to ON\\r\\n');
  else if (cmd.startsWith('bytecount ')) {
    c.write('SUCCESS: bytecount interval changed\\r\\n');
    // Like OpenVPN, every interval while connected (the interval is shortened for tests).
    const t = setInterval(() => { if (state === 'CONNECTED') c.write('>BYTECOUNT:1000,2000\\r\\n'); }, 100);
    c.on('close', () => clearInterval(t));
  }
  else if (cmd === 'state') c.write(now() + ',' + state + ',,,,,,\\r\\nEND\\r\\n');
  else if (cmd === 'signal SIGUSR1') {
    c.write('SUCCESS: signal SIGUSR1 thrown\\r\\n');
    fs.appendFileSync(path.join(here, 'usr1-certs'), fs.readFileSync(certPath, 'utf8').split('\\n')[1] + '\\n');
    setState('RECONNECTING', 'SIGUSR1');
    setTimeout(connect, 150);
  } else if (cmd === 'signal SIGTERM') { c.write('SUCCESS: signal SIGTERM thrown\\r\\n'); quit(); }
  else c.write("ERROR: unknown command, enter 'help' for more options\\r\\n");
}
const server = net.createServer((c) => {
  conns.add(c);
  c.on('close', () => conns.delete(c));
  c.on('error', () => {});
  c.write(">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info\\r\\n");
  let buf = '';
  c.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\\n')) >= 0) { const cmd = buf.slice(0, i).trim(); buf = buf.slice(i + 1); handle(c, cmd); }
  });
});
process.on('SIGTERM', quit);
server.listen(sock, () => setTimeout(connect, 100));
`, { mode: 0o755 });
  return file;
}
