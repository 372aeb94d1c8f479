// On the submit form: once an archive is chosen, read its Dockerfile in the browser
// and offer the stages as targets (a <datalist> on the target field). Nothing is
// sent for this; a file it cannot read simply offers nothing.
(function () {
  "use strict";
  const archive = document.getElementById("archive");
  const target = document.getElementById("target");
  if (!archive || !target || typeof DecompressionStream === "undefined") return;
  const MAX_BYTES = 64 * 1024 * 1024;
  const list = document.createElement("datalist");
  list.id = "target-stages";
  target.setAttribute("list", list.id);
  target.after(list);
  const hint = document.createElement("small");
  hint.id = "target-hint";
  list.after(hint);

  function field(id, fallback) {
    const value = (document.getElementById(id) || {}).value || "";
    return value.trim() || fallback;
  }

  function normal(path) {
    const parts = [];
    for (const part of path.split("/")) {
      if (part === "" || part === ".") continue;
      if (part === "..") parts.pop(); else parts.push(part);
    }
    return parts.join("/");
  }

  function text(bytes, start, length) {
    const raw = bytes.subarray(start, start + length);
    const end = raw.indexOf(0);
    return new TextDecoder().decode(end < 0 ? raw : raw.subarray(0, end));
  }

  // Walk a tar: 512-byte headers, each followed by its data padded to 512 bytes.
  function findFile(bytes, wanted) {
    let offset = 0;
    let longName = null;
    while (offset + 512 <= bytes.length) {
      const name = text(bytes, offset, 100);
      if (!name) return null;
      const size = parseInt(text(bytes, offset + 124, 12).trim() || "0", 8);
      const type = String.fromCharCode(bytes[offset + 156]);
      const prefix = text(bytes, offset + 345, 155);
      const data = offset + 512;
      if (type === "L") {
        longName = text(bytes, data, size);
      } else {
        const path = normal(longName || (prefix ? prefix + "/" + name : name));
        longName = null;
        if (path === wanted && (type === "0" || type === "\0")) {
          return new TextDecoder().decode(bytes.subarray(data, data + size));
        }
      }
      offset = data + Math.ceil(size / 512) * 512;
    }
    return null;
  }

  function stages(dockerfile) {
    const found = [];
    for (const line of dockerfile.split("\n")) {
      const match = /^\s*FROM\s+(?:--\S+\s+)*\S+\s+AS\s+(\S+)/i.exec(line);
      if (match) found.push(match[1]);
    }
    return found;
  }

  async function offer() {
    list.replaceChildren();
    hint.textContent = "";
    const file = archive.files && archive.files[0];
    if (!file || file.size > MAX_BYTES) return;
    try {
      let stream = file.stream();
      if (/\.(tgz|gz)$/i.test(file.name)) {
        stream = stream.pipeThrough(new DecompressionStream("gzip"));
      }
      const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
      const wanted = normal(field("context", ".") + "/" + field("dockerfile", "Dockerfile"));
      const dockerfile = findFile(bytes, wanted);
      if (dockerfile === null) {
        hint.textContent = "No " + wanted + " in this archive.";
        return;
      }
      const names = stages(dockerfile);
      for (const name of names) {
        const option = document.createElement("option");
        option.value = name;
        list.appendChild(option);
      }
      hint.textContent = names.length
        ? "Stages in " + wanted + ": " + names.join(", ") + " (empty: the last one)."
        : "The Dockerfile names no stages; the last one is built.";
    } catch (err) {
      hint.textContent = "";
    }
  }

  archive.addEventListener("change", offer);
  for (const id of ["context", "dockerfile"]) {
    const input = document.getElementById(id);
    if (input) input.addEventListener("change", offer);
  }
})();
