// Drives the Courier console in Debian's Chromium through playwright-core:
// the browser half of crates/courier-admin/tests/console.rs, which sets up
// the services, the dead letters and the admin server, passes the plan in
// COURIER_CONSOLE_PLAN, and afterwards checks PostgreSQL and the provider.
// Exits non-zero, naming the step, on the first failure.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const plan = JSON.parse(process.env.COURIER_CONSOLE_PLAN);
mkdirSync(plan.screenshots, { recursive: true });
const TIMEOUT = 30_000;

const browser = await chromium.launch({
  executablePath: plan.chromium,
  // As root (CI) Chromium refuses its sandbox; the page is our own.
  args: ["--no-sandbox"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 820 } });
context.setDefaultTimeout(TIMEOUT);
const page = await context.newPage();
const problems = [];
page.on("pageerror", (e) => problems.push("page error: " + e.message));
page.on("console", (m) => {
  if (m.type() === "error" && !/status of 40[13]/.test(m.text())) problems.push("console: " + m.text());
});

let current = "start";
async function step(name, body) {
  current = name;
  const started = Date.now();
  await body();
  console.log(`ok   ${name} (${Date.now() - started} ms)`);
}
async function shot(name) {
  await page.screenshot({ path: join(plan.screenshots, name + ".png"), fullPage: true });
}
/** What the page's own fetch gets for `path` with `token` (or none). */
function call(method, path, token, body) {
  return page.evaluate(async ({ method, path, token, body }) => {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    if (body) headers["Content-Type"] = "application/json";
    const r = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
    return { status: r.status, type: r.headers.get("content-type") };
  }, { method, path, token, body });
}
async function signIn(token) {
  await page.goto(plan.url + "/#/overview");
  await page.locator("#token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
}
async function act(row, button, expectDryRun, expectResult, patch) {
  await row.getByRole("button", { name: button }).click();
  await page.locator("#dry-run").filter({ hasText: expectDryRun }).waitFor();
  if (patch !== undefined) await page.locator("#patch").fill(patch);
  await page.locator("#confirm").click();
  await page.locator("#result").filter({ hasText: expectResult }).waitFor();
}

try {
  await step("without a token the console asks for one and the API answers 401", async () => {
    await page.goto(plan.url + "/");
    await page.locator("#token").waitFor();
    const refused = await call("GET", "/dead-letters");
    assert.equal(refused.status, 401);
    assert.match(refused.type, /application\/problem\+json/);
    await shot("sign-in");
  });

  await step("a wrong token is refused", async () => {
    await signIn("not-a-token-of-this-server-0000");
    await page.getByRole("alert").filter({ hasText: "(401)" }).waitFor();
  });

  await step("a read-only token sees no button it cannot use, and the API refuses it", async () => {
    await signIn(plan.reader);
    await page.locator("#who").filter({ hasText: "reader (read)" }).waitFor();
    await page.goto(plan.url + "/#/dead");
    await page.locator("#letters tbody tr").first().waitFor();
    assert.equal(await page.locator("#letters tbody tr").count(), plan.pending_all);
    assert.equal(await page.getByRole("button", { name: /Requeue|Purge/ }).count(), 0);
    assert.equal((await call("POST", "/dead-letters/requeue", plan.reader, { ids: [plan.single] })).status, 403);
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.locator("#token").waitFor();
  });

  await step("sign in: the overview shows each provider", async () => {
    await signIn(plan.lead);
    const row = page.locator(`#providers tr[data-provider="${plan.provider}"]`);
    await row.waitFor();
    await row.locator("td").nth(5).filter({ hasText: String(plan.pending) }).waitFor();
    await row.filter({ hasText: "circuit closed" }).waitFor();
    await row.filter({ hasText: "owner: payments-team" }).waitFor();
    await page.locator(`#providers tr[data-provider="${plan.other}"] td`).nth(5)
      .filter({ hasText: String(plan.pending_other) }).waitFor();
    await shot("overview");
  });

  await step("list and filter, grouped by reason", async () => {
    await page.goto(plan.url + "/#/dead");
    await page.locator("#f-reason").selectOption("invalid");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.locator("#matching").filter({ hasText: /^0 pending/ }).waitFor();
    assert.equal(await page.locator("#letters tbody tr").count(), 0);
    await page.locator("#f-provider").selectOption(plan.provider);
    await page.locator("#f-reason").selectOption("permanent");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.locator("#matching").filter({ hasText: `${plan.pending} pending` }).waitFor();
    assert.equal(await page.locator("#letters tbody tr").count(), plan.pending);
    await page.locator("#reasons .chip").filter({ hasText: `permanent${plan.pending}` }).waitFor();
    await page.locator("#f-search").fill("no letter says this");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.locator("#matching").filter({ hasText: /^0 pending/ }).waitFor();
    await page.locator("#f-search").fill("");
    await page.locator("#f-provider").selectOption(plan.other);
    await page.getByRole("button", { name: "Filter" }).click();
    await page.locator("#matching").filter({ hasText: `${plan.pending_other} pending` }).waitFor();
    assert.equal(await page.locator("#letters tbody tr").count(), plan.pending_other);
    await page.locator("#f-provider").selectOption(plan.provider);
    await page.getByRole("button", { name: "Filter" }).click();
    await page.locator("#matching").filter({ hasText: `${plan.pending} pending` }).waitFor();
    await shot("dead-letters");
  });

  await step("requeue one", async () => {
    await act(page.locator(`tr[data-letter="${plan.single}"]`), "Requeue", "Dry run: 1 pending", "Requeued 1 of 1");
  });

  await step("purge one", async () => {
    await act(page.locator(`tr[data-letter="${plan.purge}"]`), "Purge", "Dry run: 1 pending", "Purged 1 of 1");
    await page.goto(plan.url + "/#/dead/" + plan.purge);
    await page.locator("dl.facts").filter({ hasText: "purged" }).waitFor();
    await shot("dead-letter");
  });

  await step("requeue the whole filter with a JSON merge patch", async () => {
    await page.goto(`${plan.url}/#/dead?provider=${plan.provider}&reason=permanent`);
    await page.locator("#matching").filter({ hasText: `${plan.bulk} pending` }).waitFor();
    await page.getByRole("button", { name: "Requeue all matching…" }).click();
    await page.locator("#dry-run").filter({ hasText: `Dry run: ${plan.bulk} pending` }).waitFor();
    await page.locator("#patch").fill("not json");
    await page.locator("#confirm").click();
    await page.getByRole("alert").filter({ hasText: "patch: not JSON" }).waitFor();
    await page.locator("#patch").fill(plan.patch);
    await shot("requeue-dry-run");
    await page.locator("#confirm").click();
    await page.locator("#result").filter({ hasText: `Requeued ${plan.bulk} of ${plan.bulk}` }).waitFor();
    await page.locator("#matching").filter({ hasText: /^0 pending/ }).waitFor();
  });

  await step("a job's timeline: attempts, dead letter, the requeue, success", async () => {
    const deadline = Date.now() + TIMEOUT;
    for (;;) {
      await page.goto(plan.url + "/#/jobs/" + plan.job);
      await page.reload();
      const state = await page.locator("#job-state").textContent();
      if (state === "succeeded") break;
      assert.ok(Date.now() < deadline, `the job is still ${state}`);
      await page.waitForTimeout(250);
    }
    const timeline = page.locator("#timeline");
    await timeline.filter({ hasText: "dead letter" }).waitFor();
    await timeline.filter({ hasText: "requeue by api:lead" }).waitFor();
    await timeline.filter({ hasText: "success" }).waitFor();
    await page.locator("#payload").filter({ hasText: '"customer"' }).waitFor();
    await shot("job");
  });

  await step("the audit log shows every action", async () => {
    await page.goto(plan.url + "/#/audit");
    const rows = page.locator("#audit tbody tr");
    await rows.first().waitFor();
    assert.equal(await rows.count(), 3);
    const newest = rows.first();
    await newest.filter({ hasText: "requeue" }).filter({ hasText: "api:lead" }).waitFor();
    await newest.filter({ hasText: plan.patch.replace(/\s/g, "") }).waitFor();
    // The filter's action was bounded to the letters its dry run counted.
    await newest.filter({ hasText: '"until"' }).waitFor();
    await rows.nth(1).filter({ hasText: "purge" }).waitFor();
    await shot("audit");
  });

  assert.deepEqual(problems, [], "the page reported errors");
  console.log("console: every step passed");
} catch (e) {
  console.error(`FAIL ${current}: ${e.stack || e}`);
  for (const p of problems) console.error("  " + p);
  await shot("failed").catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
