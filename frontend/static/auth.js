// Access tokens for the dashboard (see app/security.py). Loaded before every other script.
//
// When the server has BAMSPROD_API_TOKEN / BAMSPROD_READ_TOKEN set, an API call answers 401:
// this script then asks for the token once (window.prompt), keeps it in localStorage and sends
// the request again with "Authorization: Bearer <token>"; later calls carry it from the start.
// The token never goes in a URL: event streams use a short-lived ticket (B.openEvents).
// With no tokens configured (the default) nothing is ever asked and nothing is added.
"use strict";

(() => {
  const KEY = "bamsprod.token";
  const nativeFetch = window.fetch.bind(window);
  let asking = null; // one prompt shared by the calls that fail together
  let declined = false; // after "Cancel", background reads stop asking until the next action
  let sessionToken = null;

  const stored = () => {
    try {
      return localStorage.getItem(KEY);
    } catch (_) {
      return null;
    }
  };

  const sameOrigin = (url) => {
    try {
      return new URL(url, location.href).origin === location.origin;
    } catch (_) {
      return false;
    }
  };

  function ask(hadToken) {
    if (!asking) {
      asking = new Promise((resolve) => {
        const message = hadToken
          ? "The server did not accept the stored access token (or it only allows reading). Token:"
          : "This bamsprod server needs an access token (BAMSPROD_API_TOKEN or READ_TOKEN):";
        const answer = (window.prompt(message) || "").trim();
        if (answer) {
          try {
            localStorage.setItem(KEY, answer);
          } catch (_) {
            /* private mode: the token lasts for this page only */
          }
          sessionToken = answer;
        }
        declined = !answer;
        resolve(answer || null);
      }).finally(() => setTimeout(() => (asking = null), 0));
    }
    return asking;
  }

  sessionToken = stored();

  window.fetch = async function fetchWithToken(input, init = {}) {
    const url = typeof input === "string" || input instanceof URL ? String(input) : input.url;
    if (!sameOrigin(url)) return nativeFetch(input, init);
    const method = (init.method || (input instanceof Request ? input.method : "GET")).toUpperCase();
    const send = (token) => {
      const headers = new Headers(init.headers || (input instanceof Request ? input.headers : undefined));
      if (token) headers.set("Authorization", `Bearer ${token}`);
      return nativeFetch(input, { ...init, headers });
    };
    const token = sessionToken;
    const res = await send(token);
    if (res.status !== 401 || (declined && method === "GET")) return res;
    const fresh = await ask(Boolean(token));
    return fresh ? send(fresh) : res;
  };
})();
