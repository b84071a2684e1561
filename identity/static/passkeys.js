// Passkeys (WebAuthn) for the login, second-factor and account pages. Without JavaScript or
// WebAuthn the passkey buttons stay hidden and every other form works as before.
"use strict";
(function () {
  if (!window.PublicKeyCredential || !navigator.credentials) return;

  // base64url <-> ArrayBuffer, for browsers without PublicKeyCredential.parse*OptionsFromJSON
  // and toJSON() (the server's JSON is py_webauthn's options_to_json).
  function toBytes(text) {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const raw = atob(b64 + "===".slice((b64.length + 3) % 4));
    return Uint8Array.from(raw, (c) => c.charCodeAt(0)).buffer;
  }
  function toText(buffer) {
    if (!buffer) return null;
    let raw = "";
    new Uint8Array(buffer).forEach((b) => { raw += String.fromCharCode(b); });
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function creationOptions(json) {
    if (PublicKeyCredential.parseCreationOptionsFromJSON) {
      return PublicKeyCredential.parseCreationOptionsFromJSON(json);
    }
    return Object.assign({}, json, {
      challenge: toBytes(json.challenge),
      user: Object.assign({}, json.user, { id: toBytes(json.user.id) }),
      excludeCredentials: (json.excludeCredentials || []).map(
        (c) => Object.assign({}, c, { id: toBytes(c.id) })),
    });
  }
  function requestOptions(json) {
    if (PublicKeyCredential.parseRequestOptionsFromJSON) {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    return Object.assign({}, json, {
      challenge: toBytes(json.challenge),
      allowCredentials: (json.allowCredentials || []).map(
        (c) => Object.assign({}, c, { id: toBytes(c.id) })),
    });
  }
  function credentialJSON(cred) {
    try { if (cred.toJSON) return cred.toJSON(); } catch (e) { /* the fallback below */ }
    const r = cred.response;
    const response = { clientDataJSON: toText(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toText(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = toText(r.authenticatorData);
      response.signature = toText(r.signature);
      response.userHandle = toText(r.userHandle);
    }
    return {
      id: cred.id, rawId: toText(cred.rawId), type: cred.type, response: response,
      authenticatorAttachment: cred.authenticatorAttachment || null,
      clientExtensionResults: cred.getClientExtensionResults(),
    };
  }

  async function post(url, csrf, body) {
    const answer = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json",
                 "X-CSRFToken": csrf },
      body: JSON.stringify(body || {}),
    });
    let data = {};
    try { data = await answer.json(); } catch (e) { /* not JSON: the generic message */ }
    if (!answer.ok) throw new Error(data.error_description || "That did not work. Try again.");
    return data;
  }

  function say(box, message) {
    const out = box.querySelector("[data-passkey-error]");
    out.textContent = message;
    out.hidden = !message;
  }
  function cancelled(error) {
    return error && (error.name === "NotAllowedError" || error.name === "AbortError");
  }

  // One passkey ceremony: options from the server, the browser's dialog, the answer back.
  async function ceremony(box, extra, signal, mediation) {
    const csrf = box.dataset.csrf;
    const json = await post(box.dataset.options, csrf);
    let cred;
    if (box.dataset.passkey === "register") {
      cred = await navigator.credentials.create({ publicKey: creationOptions(json) });
    } else {
      const request = { publicKey: requestOptions(json) };
      if (signal) request.signal = signal;
      if (mediation) request.mediation = mediation;
      cred = await navigator.credentials.get(request);
    }
    const done = await post(box.dataset.verify, csrf,
      Object.assign({ credential: credentialJSON(cred) }, extra()));
    const target = new URL(done.redirect, window.location.href);
    const here = window.location;
    if (target.pathname === here.pathname && target.search === here.search) {
      // Only the fragment differs: assign() would not load the page (and its message).
      here.hash = target.hash;
      here.reload();
    } else {
      here.assign(target.href);
    }
  }

  document.querySelectorAll("[data-passkey]").forEach((box) => {
    box.hidden = false;
    const button = box.querySelector("button[data-passkey-start]");
    const form = box.dataset.form ? document.getElementById(box.dataset.form) : null;
    const extra = () => {
      const found = {};
      if (form) {
        new FormData(form).forEach((value, key) => {
          if (key !== "csrf_token" && key !== "password") found[key] = value;
        });
        if ("remember" in found) found.remember = true;
      }
      return found;
    };
    let autofill = null;
    button.addEventListener("click", async (event) => {
      event.preventDefault();
      if (autofill) autofill.abort();
      if (form && box.dataset.validate && !form.reportValidity()) return;
      say(box, "");
      button.disabled = true;
      try {
        await ceremony(box, extra);
      } catch (error) {
        say(box, cancelled(error)
          ? "No passkey was used. Try again, or use another way."
          : error.message);
      } finally {
        button.disabled = false;
      }
    });
    // Passkey autofill in the username field, where the browser offers it.
    if (box.dataset.autofill && PublicKeyCredential.isConditionalMediationAvailable) {
      PublicKeyCredential.isConditionalMediationAvailable().then((available) => {
        if (!available) return;
        autofill = new AbortController();
        ceremony(box, extra, autofill.signal, "conditional").catch((error) => {
          if (!cancelled(error)) say(box, error.message);
        });
      });
    }
  });
})();
