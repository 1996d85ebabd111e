// node browser-check.mjs URL SCREENSHOT.png "text" ["text" ...]
// Drives a bertpress web export in headless Chromium (the system one; puppeteer-core downloads
// no browser): waits for the model, types each text (a "first<TAB>second" argument fills the
// sentence-pair page's two fields), submits, reads label, scores and latency
// from the page, saves a screenshot. Requests that leave the page's origin are blocked and
// reported, so "no network at run time" is checked, not assumed. Prints one JSON object.
import puppeteer from 'puppeteer-core';

const [url, screenshot, ...texts] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const origin = new URL(url).origin;
const browser = await puppeteer.launch({
  executablePath,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check'],
});
const out = { url, calls: [], offsite: [], console: [], errors: [] };
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 900, height: 560 });
  await page.setRequestInterception(true);
  page.on('request', (req) => {
    if (req.url().startsWith(origin) || req.url().startsWith('blob:') || req.url().startsWith('data:')) req.continue();
    else { out.offsite.push(req.url()); req.abort(); }
  });
  page.on('console', (msg) => out.console.push(`${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => out.errors.push(String(err)));
  const t0 = Date.now();
  await page.goto(url, { waitUntil: 'load' });
  await page.waitForFunction(
    () => !document.getElementById('text').disabled || document.getElementById('status').dataset.error,
    { timeout: 30000 });
  out.load_ms = Date.now() - t0;
  out.status = await page.$eval('#status', (e) => e.textContent);
  if (!out.status.startsWith('error')) {
    out.pair_field = await page.$eval('#text_pair', (e) => !e.hidden).catch(() => false);
    for (const [i, arg] of texts.entries()) {
      const [text, textPair] = arg.split('\t');
      await page.click('#text', { clickCount: 3 });
      await page.type('#text', text);
      if (textPair !== undefined) {
        await page.click('#text_pair', { clickCount: 3 });
        await page.type('#text_pair', textPair);
      }
      await page.click('#classify');
      await page.waitForFunction((n) => document.getElementById('result').dataset.calls === String(n)
        || document.getElementById('status').dataset.error, { timeout: 30000 }, i + 1);
      out.status = await page.$eval('#status', (e) => e.textContent);
      if (out.status.startsWith('error')) break;
      out.calls.push(await page.evaluate(() => ({
        label: document.getElementById('label').textContent,
        scores: Object.fromEntries([...document.querySelectorAll('#scores .row')]
          .map((r) => [r.dataset.label, Number(r.dataset.score)])),
        ms: Number(document.getElementById('result').dataset.ms),
        latency_text: document.getElementById('latency').textContent,
      })));
    }
  }
  await page.screenshot({ path: screenshot });
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
