// Follows a build on its page: the log arrives live as Server-Sent Events (the
// browser resumes a dropped stream from the last line it got), and the state, stages
// and steps are refreshed from the JSON API when the build makes progress.
(function () {
  "use strict";
  const root = document.getElementById("build");
  if (!root) return;
  const logBox = document.getElementById("log");
  let finished = false;

  function text(id, value) {
    const el = document.getElementById(id);
    if (el) el.textContent = value;
  }

  function renderSteps(steps) {
    const body = document.querySelector("#steps tbody");
    body.replaceChildren();
    for (const step of steps) {
      if (step.internal) continue;
      const row = body.insertRow();
      if (step.error) row.className = "failed";
      row.insertCell().textContent = step.stage || "";
      const name = row.insertCell().appendChild(document.createElement("code"));
      name.textContent = step.name;
      row.insertCell().textContent = step.dockerfile_line || "";
      const cache = row.insertCell();
      if (step.cached) {
        const badge = cache.appendChild(document.createElement("span"));
        badge.className = "badge cached";
        badge.textContent = "cached";
      }
      row.insertCell().textContent =
        step.duration_seconds == null ? "" : step.duration_seconds.toFixed(2) + " s";
    }
  }

  function renderStages(stages) {
    const body = document.querySelector("#stages tbody");
    body.replaceChildren();
    for (const stage of stages) {
      const row = body.insertRow();
      row.insertCell().textContent = stage.stage;
      row.insertCell().textContent = stage.steps;
      row.insertCell().textContent = stage.cached + "/" + stage.steps;
      row.insertCell().textContent = stage.duration_seconds.toFixed(2) + " s";
    }
  }

  function renderBuild(build) {
    const state = document.getElementById("state");
    state.textContent = build.state;
    state.className = "state state-" + build.state;
    root.dataset.state = build.state;
    text("worker", build.worker || "—");
    if (build.started_at) text("started", build.started_at.slice(0, 19).replace("T", " ") + " UTC");
    text("cached", build.steps_cached + "/" + build.steps_total);
    if (build.duration_seconds != null) text("duration", build.duration_seconds.toFixed(1) + " s");
    if (build.source.commit) text("commit", build.source.commit);
    if (build.image) {
      const size = (build.image.size_bytes / 1e6).toFixed(1) + " MB";
      const refs = build.image.references.map((r) => r + "@" + build.image.digest);
      text("image", refs.join("\n") + "\n" + size);
    }
    const stages = Object.entries(build.stage_sizes || {});
    if (stages.length) {
      text("stage-sizes", stages.map(([name, bytes]) =>
        name + ": " + (bytes / 1e6).toFixed(1) + " MB").join(", "));
    }
    if (build.error) {
      const error = document.getElementById("error");
      let message = build.error.message;
      if (build.error.stage && !message.includes("Dockerfile line")) message += " (stage " + build.error.stage +
        (build.error.dockerfile_line ? ", Dockerfile line " + build.error.dockerfile_line : "") + ")";
      error.textContent = message;
      error.hidden = false;
    }
    const waiting = document.getElementById("waiting");
    if (build.waiting) {
      const place = build.waiting.position == null ? "" :
        " (place " + (build.waiting.position + 1) + " in queue " + build.queue + ")";
      waiting.textContent = "Waiting" + place + ": " + build.waiting.reason;
      waiting.hidden = false;
    } else {
      waiting.hidden = true;
    }
    renderStages(build.stages || []);
    renderSteps(build.steps || []);
    const cancel = document.getElementById("cancel-form");
    if (cancel && !["queued", "running"].includes(build.state)) cancel.remove();
    const retry = document.getElementById("retry-form");
    if (retry) retry.hidden = ["queued", "running"].includes(build.state);
  }

  // BuildKit numbers its steps ("#5 [build 2/3] RUN make"); later lines of the step
  // start with the same number. Each stage's lines go in a <details> of their own.
  const stageOfStep = new Map();
  const folds = new Map();
  let openStage = null;

  function stageName(rest) {
    const match = /^\[([^\]]+)\]/.exec(rest);
    if (!match) return null;
    const words = match[1].split(" ");
    return /^\d+\/\d+$/.test(words[0]) ? "build" : words[0];
  }

  function foldFor(stage) {
    if (folds.has(stage)) return folds.get(stage);
    const fold = document.createElement("details");
    fold.className = "log-stage";
    fold.dataset.stage = stage;
    const summary = document.createElement("summary");
    summary.textContent = stage === "internal" ? "internal steps" : "stage " + stage;
    fold.appendChild(summary);
    logBox.appendChild(fold);
    folds.set(stage, fold);
    return fold;
  }

  function place(line) {
    const step = /^#(\d+) (.*)$/.exec(line);
    if (!step) return logBox;
    const [, number, rest] = step;
    if (!stageOfStep.has(number)) stageOfStep.set(number, stageName(rest));
    const stage = stageOfStep.get(number);
    if (!stage) return logBox;
    const fold = foldFor(stage);
    if (openStage !== stage && stage !== "internal") {
      // The stage that runs now opens; the one before folds unless it failed.
      const before = openStage && folds.get(openStage);
      if (before && !before.classList.contains("failed")) before.open = false;
      fold.open = true;
      openStage = stage;
    }
    return fold;
  }

  function appendLog(lines) {
    if (!lines.length) return;
    const atBottom = window.innerHeight + window.scrollY >= document.body.offsetHeight - 40;
    for (const line of lines) {
      const span = document.createElement("span");
      span.className = "log-line";
      const target = place(line);
      if (/ERROR|error:/.test(line)) {
        span.classList.add("log-error");
        if (target !== logBox) {
          target.classList.add("failed");
          target.open = true;
        }
      }
      span.textContent = line;
      target.appendChild(span);
    }
    if (atBottom) window.scrollTo(0, document.body.scrollHeight);
  }

  async function refresh() {
    try {
      const response = await fetch(root.dataset.api);
      if (response.ok && !finished) renderBuild(await response.json());
    } catch (err) {
      // The farm may be restarting; the next refresh tries again.
    }
  }

  let received = 0;

  function follow() {
    const source = new EventSource(root.dataset.log + "?follow=1&start=" + received);
    source.addEventListener("line", (event) => {
      received += 1;
      appendLog([event.data]);
    });
    // The browser resumes a dropped stream by itself, but not one the farm
    // refused (too many followers): come back in a few seconds from where it was.
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED && !finished) {
        setTimeout(follow, 5000);
      }
    });
    source.addEventListener("progress", refresh);
    source.addEventListener("end", (event) => {
      finished = true;
      source.close();
      renderBuild(JSON.parse(event.data));
      root.dataset.followed = "ended";
    });
  }
  follow();
  // A queued build's place in the queue changes without any progress event.
  const timer = setInterval(() => (finished ? clearInterval(timer) : refresh()), 3000);
})();
