// HTML pages of the test OpenID provider (test/helpers/oidc.ts). The device-flow pages wrap the
// forms oidc-provider generates itself (with its xsrf token); the login and consent pages are this
// helper's own interaction pages. Every page marks itself with `data-page` and any error with
// `data-error`, so the cookie-keeping client in oidc.ts can tell where a browser would be.

export function escapeHtml(value: string): string {
  return value
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

export function page(name: string, title: string, body: string, error?: { code: string; message: string }): string {
  const err = error === undefined
    ? ''
    : `<p class="error" data-error="${escapeHtml(error.code)}">${escapeHtml(error.message)}</p>`;
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body data-page="${escapeHtml(name)}">
<h1>${escapeHtml(title)}</h1>
${err}
${body}
</body>
</html>`;
}

/** The user-code entry page; `form` is oidc-provider's own (id `op.deviceInputForm`). */
export function deviceInputPage(form: string, error?: { code: string; message: string }): string {
  return page('device-input', 'Enter the code shown on your device',
    `${form}\n<button type="submit" form="op.deviceInputForm">Continue</button>`, error);
}

/** The "is this your device?" page; `form` is oidc-provider's own (id `op.deviceConfirmForm`). */
export function deviceConfirmPage(form: string, clientName: string, userCode: string): string {
  return page('device-confirm', 'Confirm device',
    `<p><strong>${escapeHtml(clientName)}</strong> asks to sign in. Check that your device shows
<code>${escapeHtml(userCode)}</code>.</p>
${form}
<button type="submit" form="op.deviceConfirmForm">Continue</button>
<button type="submit" form="op.deviceConfirmForm" name="abort" value="yes">Abort</button>`);
}

export function deviceSuccessPage(clientName: string): string {
  return page('device-success', 'Sign-in success',
    `<p>You signed in ${escapeHtml(clientName)}. You can close this page.</p>`);
}

export function loginPage(action: string, login: string, error?: { code: string; message: string }): string {
  return page('login', 'Sign in',
    `<form id="login" method="post" action="${escapeHtml(action)}">
<input type="text" name="login" value="${escapeHtml(login)}" autocomplete="username">
<input type="password" name="password" autocomplete="current-password">
<button type="submit">Sign in</button>
</form>`, error);
}

export function consentPage(confirmAction: string, abortAction: string, clientName: string, asks: string[]): string {
  const items = asks.map((a) => `<li>${escapeHtml(a)}</li>`).join('\n');
  return page('consent', 'Authorize',
    `<p><strong>${escapeHtml(clientName)}</strong> asks for:</p>
<ul>
${items}
</ul>
<form id="consent" method="post" action="${escapeHtml(confirmAction)}">
<button type="submit">Allow</button>
</form>
<form id="deny" method="post" action="${escapeHtml(abortAction)}">
<button type="submit">Deny</button>
</form>`);
}

export function errorPage(code: string, message: string): string {
  return page('error', 'Error', '', { code, message });
}
