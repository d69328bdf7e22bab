// Opening a listener: an address in use or not allowed becomes a coded error naming it.
import { ErrorCodes } from '../proto/errors.ts';
import { SepalError } from './errors.ts';

/** A listen error becomes a coded one that names the address. */
export async function listenOrExplain<T>(listen: () => Promise<T>, addr: { host: string; port: number }): Promise<T> {
  try {
    return await listen();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
      throw new SepalError(ErrorCodes.LISTEN_FAILED, `cannot listen on ${addr.host}:${addr.port}: ${code}`, { cause: e });
    }
    throw e;
  }
}
