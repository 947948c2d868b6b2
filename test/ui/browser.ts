// Headless Chromium for the web view's tests and scripts: Debian's /usr/bin/chromium (or
// $WEFT_CHROMIUM) driven by playwright-core, which downloads no browser of its own. --no-sandbox
// because the tests run as root, where Chromium's sandbox refuses to start.

import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';

export function chromiumPath(): string {
  return process.env['WEFT_CHROMIUM'] ?? '/usr/bin/chromium';
}

export async function launchBrowser(): Promise<Browser> {
  const executablePath = chromiumPath();
  if (!existsSync(executablePath)) {
    throw new Error(`no Chromium at ${executablePath}: apt-get install chromium (scripts/setup.sh does), or set WEFT_CHROMIUM to a Chromium binary`);
  }
  return chromium.launch({ executablePath, headless: true, args: ['--no-sandbox'] });
}

export interface PageOptions {
  readonly width?: number;
  readonly height?: number;
  /**
   * Keep the page's Content-Security-Policy in force. By default it is bypassed: weftctl ui
   * serves `default-src 'self'`, which forbids eval, and Playwright evaluates string predicates
   * (waitForFunction('…'), evaluate('…')) with it. A test that checks the page itself runs under
   * that policy sets this and uses selectors and function predicates only.
   */
  readonly keepCsp?: boolean;
}

/** A headless Chromium with one page open; close() ends the browser (safe to call twice). */
export interface BrowserSession {
  readonly browser: Browser;
  readonly page: Page;
  /** Uncaught exceptions and console errors of the page so far. */
  readonly errors: readonly string[];
  close(): Promise<void>;
}

/** Launches Chromium and opens a page of the given size (default 1440 × 900). */
export async function openBrowser(opts: PageOptions = {}): Promise<BrowserSession> {
  const browser = await launchBrowser();
  try {
    const context = await browser.newContext({ viewport: { width: opts.width ?? 1440, height: opts.height ?? 900 }, bypassCSP: opts.keepCsp !== true });
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    page.on('console', (msg) => { if (msg.type() === 'error') errors.push(msg.text()); });
    return { browser, page, errors, close: () => browser.close() };
  } catch (err) {
    await browser.close();
    throw err;
  }
}

/**
 * Opens `url` in a fresh headless Chromium, runs `fn`, and closes the browser whatever happens
 * (also when `fn` throws or the page never loads).
 */
export async function withPage<T>(url: string, fn: (session: BrowserSession) => Promise<T>, opts: PageOptions = {}): Promise<T> {
  const session = await openBrowser(opts);
  try {
    await session.page.goto(url);
    return await fn(session);
  } finally {
    await session.close();
  }
}

/** Waits until the page has drawn a model whose seq is at least `seq` (body[data-seq]). */
export async function waitForSeq(page: Page, seq: number, timeoutMs = 10_000): Promise<void> {
  await page.waitForFunction(`Number(document.body.dataset.seq ?? -1) >= ${Number(seq)}`, undefined, { timeout: timeoutMs });
}
