// The dashboard's access token (see app/api/security.py): where it is kept and how it is asked for.
//
// When the server has BAMSPROD_API_TOKEN / BAMSPROD_READ_TOKEN set, an API call answers 401:
// api.js's apiFetch then asks for the token here, once (window.prompt), keeps it in localStorage
// and sends the request again with it. The token never goes in a URL (event streams use a
// short-lived ticket, see openEvents in api.js). With no tokens configured (the default)
// nothing is ever asked. Nothing global is replaced: only apiFetch sends the token.

const KEY = "bamsprod.token";
let asking = null; // one prompt shared by the calls that fail together
let declined = false; // after "Cancel", background reads stop asking until the next action

function stored() {
  try {
    return localStorage.getItem(KEY);
  } catch (_) {
    return null;
  }
}

let token = stored();

/** The token to send, or null. */
export const currentToken = () => token;

/** True after the user cancelled the question (reads then stop asking). */
export const tokenDeclined = () => declined;

/** Ask for a token (once for the calls failing together); resolves to it, or null. */
export function askToken(hadToken) {
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
        token = answer;
      }
      declined = !answer;
      resolve(answer || null);
    }).finally(() => setTimeout(() => (asking = null), 0));
  }
  return asking;
}
