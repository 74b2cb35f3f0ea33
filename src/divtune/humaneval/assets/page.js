// divtune human evaluation page. Plain script, no libraries, works from file://.
// State lives in localStorage under the build id and the annotator id, and is
// written on every click, so a reload or a closed tab loses nothing.
(function () {
  "use strict";
  var study = JSON.parse(document.getElementById("study").textContent);
  var CHOICES = ["A", "B", "tie"];
  var ns = "divtune-humaneval:" + study.build_id;
  var annotator = null;
  var state = null; // {position: int, items: {item_id: {answers: {qid: choice}, comment, timestamp}}}
  var storageOk = true;

  function $(id) { return document.getElementById(id); }

  function read(key) {
    try { return window.localStorage.getItem(key); } catch (e) { storageOk = false; return null; }
  }
  function write(key, value) {
    try { window.localStorage.setItem(key, value); return true; } catch (e) { storageOk = false; return false; }
  }
  function stateKey(who) { return ns + ":answers:" + who; }

  function loadState(who) {
    var raw = read(stateKey(who));
    var loaded = null;
    try { loaded = raw ? JSON.parse(raw) : null; } catch (e) { loaded = null; }
    if (!loaded || typeof loaded.items !== "object") loaded = { position: 0, items: {} };
    loaded.position = Math.min(Math.max(loaded.position | 0, 0), study.items.length - 1);
    return loaded;
  }
  function save() {
    if (!write(stateKey(annotator), JSON.stringify(state))) {
      $("saved-note").textContent = "Could not save in this browser: download your answers before closing the page.";
      $("saved-note").style.color = "#b00";
    }
  }

  function isComplete(record) {
    if (!record) return false;
    return study.questions.every(function (q) { return CHOICES.indexOf(record.answers[q.id]) >= 0; });
  }
  function hasContent(record) {
    return !!record && (Object.keys(record.answers).length > 0 || (record.comment || "") !== "");
  }

  // ------------------------------------------------------------ rendering

  function renderStatic() {
    document.title = study.title;
    $("title").textContent = study.title;
    $("instructions").textContent = study.instructions;
    $("set-A-title").textContent = study.choice_labels.A;
    $("set-B-title").textContent = study.choice_labels.B;
    var jump = $("jump");
    study.items.forEach(function (item, index) {
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = String(index + 1);
      b.title = "Item " + (index + 1);
      b.addEventListener("click", function () { show(index); });
      jump.appendChild(b);
    });
  }

  function fillStories(list, stories) {
    list.textContent = "";
    stories.forEach(function (text) {
      var li = document.createElement("li");
      li.textContent = text;
      list.appendChild(li);
    });
  }

  function buildQuestions(item, record) {
    var form = $("questions");
    form.textContent = "";
    study.questions.forEach(function (q) {
      var fs = document.createElement("fieldset");
      fs.id = "question-" + q.id;
      var legend = document.createElement("legend");
      legend.textContent = q.text;
      fs.appendChild(legend);
      var choices = document.createElement("div");
      choices.className = "choices";
      CHOICES.forEach(function (choice) {
        var label = document.createElement("label");
        var input = document.createElement("input");
        input.type = "radio";
        input.name = "q-" + q.id;
        input.value = choice;
        input.id = "q-" + q.id + "-" + choice;
        input.checked = !!record && record.answers[q.id] === choice;
        input.addEventListener("change", function () { answer(item.item_id, q.id, choice); });
        label.appendChild(input);
        label.appendChild(document.createTextNode(study.choice_labels[choice]));
        choices.appendChild(label);
      });
      fs.appendChild(choices);
      if (!(record && record.answers[q.id])) fs.className = "unanswered";
      form.appendChild(fs);
    });
    if (study.comment) {
      var fs = document.createElement("fieldset");
      var legend = document.createElement("legend");
      legend.textContent = "Comment (optional)";
      var area = document.createElement("textarea");
      area.id = "comment";
      area.value = (record && record.comment) || "";
      area.addEventListener("input", function () { comment(item.item_id, area.value); });
      fs.appendChild(legend);
      fs.appendChild(area);
      form.appendChild(fs);
    }
  }

  function show(index) {
    index = Math.min(Math.max(index, 0), study.items.length - 1);
    var item = study.items[index];
    var record = state.items[item.item_id];
    state.position = index;
    save();
    $("item").setAttribute("data-item-id", item.item_id);
    $("item-position").textContent = "Item " + (index + 1) + " of " + study.items.length;
    $("prompt-text").textContent = item.prompt;
    fillStories(document.querySelector("#set-A ol"), item.A);
    fillStories(document.querySelector("#set-B ol"), item.B);
    buildQuestions(item, record);
    Array.prototype.forEach.call(document.querySelectorAll("button.prev"), function (b) { b.disabled = index === 0; });
    Array.prototype.forEach.call(document.querySelectorAll("button.next"), function (b) { b.disabled = index === study.items.length - 1; });
    if (storageOk) $("saved-note").textContent = "";
    updateProgress();
    window.scrollTo(0, 0);
  }

  function updateProgress() {
    var done = 0;
    var chips = $("jump").children;
    study.items.forEach(function (item, index) {
      var record = state.items[item.item_id];
      var complete = isComplete(record);
      if (complete) done += 1;
      chips[index].className = (complete ? "done" : hasContent(record) ? "partial" : "") + (index === state.position ? " current" : "");
    });
    $("progress-text").textContent = done + " of " + study.items.length + " items answered";
    $("progress").max = study.items.length;
    $("progress").value = done;
    return done;
  }

  // ------------------------------------------------------------ answering

  function recordFor(itemId) {
    if (!state.items[itemId]) state.items[itemId] = { answers: {}, comment: "", timestamp: null };
    return state.items[itemId];
  }

  function answer(itemId, questionId, choice) {
    var record = recordFor(itemId);
    record.answers[questionId] = choice;
    record.timestamp = new Date().toISOString();
    $("question-" + questionId).className = "";
    save();
    var done = updateProgress();
    if (storageOk) {
      $("saved-note").textContent = done === study.items.length ? "All items answered: press \u201cDownload answers\u201d." : "Saved.";
    }
  }

  function comment(itemId, text) {
    var record = recordFor(itemId);
    record.comment = text;
    record.timestamp = new Date().toISOString();
    save();
    updateProgress();
  }

  function answersDocument() {
    var answers = [];
    study.items.forEach(function (item) {
      var record = state.items[item.item_id];
      if (!hasContent(record)) return;
      var entry = { item_id: item.item_id, answers: {}, timestamp: record.timestamp };
      study.questions.forEach(function (q) { if (record.answers[q.id]) entry.answers[q.id] = record.answers[q.id]; });
      if (record.comment) entry.comment = record.comment;
      answers.push(entry);
    });
    return {
      format: "divtune-humaneval-answers",
      version: 1,
      build_id: study.build_id,
      annotator: annotator,
      saved_at: new Date().toISOString(),
      answers: answers
    };
  }

  function download() {
    var doc = answersDocument();
    if (doc.answers.length === 0) {
      $("saved-note").textContent = "Nothing answered yet.";
      return;
    }
    var blob = new Blob([JSON.stringify(doc, null, 1)], { type: "application/json" });
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "answers_" + study.build_id + "_" + annotator.replace(/[^A-Za-z0-9_.-]+/g, "_") + ".json";
    document.body.appendChild(link);
    link.click();
    setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  }

  // ------------------------------------------------------------ annotator

  function begin(who) {
    annotator = who;
    write(ns + ":annotator", who);
    state = loadState(who);
    $("annotator-name").textContent = who;
    $("start").hidden = true;
    $("status").hidden = false;
    $("progress").hidden = false;
    $("item").hidden = false;
    show(state.position);
    if (!storageOk) {
      $("saved-note").textContent = "This browser does not keep data for this page: download your answers before closing it.";
      $("saved-note").style.color = "#b00";
    }
  }

  function askAnnotator() {
    $("start").hidden = false;
    $("item").hidden = true;
    $("status").hidden = true;
    $("progress").hidden = true;
    $("annotator-input").value = annotator || "";
    $("annotator-input").focus();
  }

  renderStatic();
  $("start-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var who = $("annotator-input").value.trim();
    if (who) begin(who);
  });
  $("change-annotator").addEventListener("click", askAnnotator);
  $("download").addEventListener("click", download);
  Array.prototype.forEach.call(document.querySelectorAll("button.prev"), function (b) {
    b.addEventListener("click", function () { show(state.position - 1); });
  });
  Array.prototype.forEach.call(document.querySelectorAll("button.next"), function (b) {
    b.addEventListener("click", function () { show(state.position + 1); });
  });

  var fromUrl = new URLSearchParams(window.location.search).get("annotator");
  var remembered = read(ns + ":annotator");
  if (fromUrl && fromUrl.trim()) begin(fromUrl.trim());
  else if (remembered) begin(remembered);
  else askAnnotator();
})();
