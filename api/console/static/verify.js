// The regulator page's own check of an event's inclusion proof: the page fetches the proof,
// the checkpoint and the study's keys, then recomputes the RFC 9162 root from the leaf hash
// and audit path (WebCrypto SHA-256) and checks the checkpoint's Ed25519 signature and any
// witness cosignatures (WebCrypto Ed25519), so the verdict is the browser's, not the
// server's. The fields stay editable: a proof received elsewhere can be pasted and checked.
"use strict";

const encoder = new TextEncoder();

function bytes(b64) {
  const text = atob(b64.trim());
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function same(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function hex(data) {
  return Array.from(data, (x) => x.toString(16).padStart(2, "0")).join("");
}

async function sha256(data) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
}

async function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(1), left, right));
}

// RFC 9162 §2.1.3.2: the root that the audit path puts leaf hash `leaf` at `index` under
// (null when the path does not fit a tree of `size` leaves).
async function rootFromPath(leaf, index, size, path) {
  if (index < 0 || index >= size) return null;
  let fn = index, sn = size - 1, r = leaf;
  for (const p of path) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn !== 0 && fn % 2 === 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : null;
}

// A C2SP signed note: its body (what was signed) and its signature lines (name, blob).
function parseNote(note) {
  const cut = note.lastIndexOf("\n\n");
  if (cut < 0) throw new Error("the checkpoint note has no signature block");
  const body = note.slice(0, cut + 1);
  const lines = note.slice(cut + 2).split("\n").filter((l) => l).map((line) => {
    if (!line.startsWith("\u2014 ")) throw new Error("a signature line of the note is malformed");
    const [name, blob] = line.slice(2).split(" ");
    return { name, raw: bytes(blob || "") };
  });
  const [origin, size, root] = body.split("\n");
  if (!/^(0|[1-9][0-9]*)$/.test(size || "")) throw new Error("the checkpoint's tree size is malformed");
  return { body, lines, origin, size: Number(size), root: bytes(root || "") };
}

async function ed25519(publicKey, signature, message) {
  const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
}

// The study key whose signature on the note verifies, or null.
async function signedBy(note, keys) {
  for (const key of keys) {
    const [name, keyHash] = key.key_id.split("+");
    for (const line of note.lines) {
      if (line.name !== name || hex(line.raw.slice(0, 4)) !== keyHash) continue;
      if (await ed25519(bytes(key.public_key), line.raw.slice(4), encoder.encode(note.body))) {
        return key;
      }
    }
  }
  return null;
}

// The witnesses (verifier keys name+hexid+base64(type ‖ key)) whose cosignature verifies.
async function cosignedBy(note, witnesses) {
  const names = [];
  for (const vkey of witnesses) {
    // name+hexid+base64: the base64 may hold "+" itself.
    const [name, id, ...rest] = vkey.split("+");
    const blob = rest.join("+");
    const publicKey = bytes(blob).slice(1);
    for (const line of note.lines) {
      if (line.name !== name || hex(line.raw.slice(0, 4)) !== id || line.raw.length !== 76) continue;
      const time = new DataView(line.raw.buffer).getBigUint64(4);
      const message = encoder.encode(`cosignature/v1\ntime ${time}\n${note.body}`);
      if (await ed25519(publicKey, line.raw.slice(12), message)) names.push(name);
    }
  }
  return names;
}

function field(id) {
  return document.getElementById(id);
}

function show(verdict, text) {
  const out = field("verdict");
  out.dataset.verdict = verdict;
  out.textContent = text;
}

async function check(form) {
  const keys = JSON.parse(form.dataset.keys);
  const witnesses = JSON.parse(form.dataset.witnesses);
  const event = form.dataset.event;
  const index = Number(field("p-index").value);
  const size = Number(field("p-size").value);
  let note;
  try {
    note = parseNote(field("p-note").value.replace(/\r\n/g, "\n"));
    const path = field("p-path").value.split("\n").filter((l) => l.trim()).map(bytes);
    const leaf = bytes(field("p-leaf").value);
    if (note.origin !== `trialledger/${form.dataset.study}`) {
      return show("failed", `Not verified: the checkpoint is of ${note.origin}, not of this study.`);
    }
    if (note.size !== size) {
      return show("failed", `Not verified: the proof is for a tree of ${size} events, the checkpoint of ${note.size}.`);
    }
    const root = await rootFromPath(leaf, index, size, path);
    if (root === null || !same(root, note.root)) {
      return show("failed", `Not verified: the audit path of event ${event} does not lead to the root of checkpoint ${note.size}.`);
    }
    const key = await signedBy(note, keys);
    if (key === null) {
      return show("failed", `Not verified: checkpoint ${note.size} carries no valid signature by a key of this study.`);
    }
    const cosigners = await cosignedBy(note, witnesses);
    const by = cosigners.length ? cosigners.join(", ")
      : witnesses.length ? "no witness" : "no witness (none configured)";
    show("verified", `Event ${event} verified against checkpoint ${note.size} (leaf ${index}), signed by ${key.key_id} (${key.status}), cosigned by ${by}.`);
  } catch (e) {
    show("failed", `Not verified: ${e.message}`);
  }
}

async function fetched(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

async function load(form) {
  const base = `/ui/studies/${encodeURIComponent(form.dataset.study)}/ledger`;
  try {
    const checkpoint = await fetched(`${base}/checkpoint`);
    const proof = await fetched(`${base}/proofs/inclusion?event=${encodeURIComponent(form.dataset.event)}&tree_size=${checkpoint.tree_size}`);
    field("p-note").value = checkpoint.note;
    field("p-leaf").value = proof.leaf_hash;
    field("p-index").value = proof.leaf_index;
    field("p-size").value = proof.tree_size;
    field("p-path").value = proof.proof.join("\n");
  } catch (e) {
    return show("failed", `No proof to check: ${e.message}`);
  }
  return check(form);
}

document.addEventListener("DOMContentLoaded", () => {
  const form = field("proof-form");
  if (!form) return;
  form.addEventListener("submit", (e) => { e.preventDefault(); check(form); });
  if (!window.crypto || !crypto.subtle) {
    show("failed", "This browser offers no WebCrypto here (it needs HTTPS or localhost): nothing was checked.");
    return;
  }
  load(form);
});
