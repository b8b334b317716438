#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The company mapping grid in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`): search, the Missing values filter, link, swap and unlink through a
//! cell's popover, and Advanced Quick Match with the slider, the review's search, Select
//! All / Clear All and Apply, the grid refreshing in place; then the company page's
//! inherited-role caption. A failing step saves a screenshot under
//! `target/browser-screenshots/`.
//!
//! Then the link history with one-click undo of the Quick Match, and deleting a company
//! then unblocking its integration company on Blocked Companies; the company page's user
//! table (Source, contact type, role, why, last synced) and its inheritance caption.
//! The connect wizard (credentials → Test → options → enable sync) for the ConnectWise
//! sandbox, and the admin pages with the mapping grid's columns at 1440 px with three
//! integrations.
//! Needs `chromedriver` on PATH. Without it the test is skipped with a message, except
//! under CI=true, where that is a failure (`.ci/run` installs both packages).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_chromedriver() -> Option<(Driver, String)> {
    mspbridge_providers::outbound::install_crypto_provider();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let driver = Driver(child);
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/status")).await.is_ok() {
            return Some((driver, url));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn browser(webdriver: &str) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]}),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(webdriver)
        .await
        .expect("a Chromium session")
}

type Step = Result<(), String>;

fn check(ok: bool, what: impl Into<String>) -> Step {
    if ok { Ok(()) } else { Err(what.into()) }
}

fn e<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |err| format!("{what}: {err}")
}

/// Waits until `script` (a JS expression) is truthy.
async fn until(c: &Client, script: &str, what: &str) -> Step {
    for _ in 0..100 {
        let v = c
            .execute(&format!("return !!({script});"), vec![])
            .await
            .map_err(e(what))?;
        if v == Value::Bool(true) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = c
        .execute(
            "return (document.getElementById('error')?.textContent || '') + ' | ' + [...document.querySelectorAll('.toast')].map(t => t.textContent).join(' / ') + ' | wider than the window: ' + [...document.querySelectorAll('body *')].filter(x => x.getBoundingClientRect().right > window.innerWidth + 1).slice(0, 6).map(x => x.tagName + '.' + x.className + ' ' + Math.round(x.getBoundingClientRect().right)).join(', ')",
            vec![],
        )
        .await
        .unwrap_or_default();
    Err(format!(
        "timed out waiting for {what} ({script}); page says: {page}"
    ))
}

async fn js(c: &Client, script: &str) -> Result<Value, String> {
    c.execute(script, vec![]).await.map_err(e(script))
}

/// The text of every cell of the row whose company name is `name`.
const ROW_TEXT: &str = "(name) => [...document.querySelectorAll('#rows tr')].filter(r => r.cells[0].textContent.trim().startsWith(name)).map(r => [...r.cells].map(c => c.textContent.trim()))[0]";

/// Opens the popover of Zeta Manual's ConnectWise cell (once the grid shows only that row).
async fn zeta_cell(c: &Client) -> Step {
    until(
        c,
        "document.querySelectorAll('#rows tr').length === 1 && document.querySelector('#rows tr td').textContent.startsWith('Zeta Manual') && document.getElementById('count').textContent === '1 company'",
        "only Zeta Manual in the grid, counted in words",
    )
    .await?;
    js(
        c,
        "document.querySelector('#rows tr td.cell').click(); return 1",
    )
    .await?;
    Ok(())
}

/// Integration `cw`'s companies that no portal company links.
async fn unlinked_list(app: &TestApp, cw: i64) -> Vec<Value> {
    let (_, v) = app
        .get(
            &format!("/api/v1/integrations/{cw}/companies?unlinked=true"),
            &app.a.owner_token,
        )
        .await;
    v.as_array().cloned().unwrap_or_default()
}

async fn sign_in(app: &TestApp, c: &Client) -> Step {
    c.goto(&app.url("/login")).await.map_err(e("login page"))?;
    c.find(Locator::Id("email"))
        .await
        .map_err(e("email"))?
        .send_keys(&app.a.email)
        .await
        .map_err(e("email"))?;
    c.find(Locator::Id("password"))
        .await
        .map_err(e("password"))?
        .send_keys(ADMIN_PASSWORD)
        .await
        .map_err(e("password"))?;
    c.find(Locator::Css("button[type=submit]"))
        .await
        .map_err(e("sign in"))?
        .click()
        .await
        .map_err(e("sign in"))?;
    until(
        c,
        "location.pathname.startsWith('/settings/integrations')",
        "signed in",
    )
    .await?;

    Ok(())
}

/// Writes a PNG of the page to `target/screenshots/{name}.png`.
async fn shot(c: &Client, name: &str) -> Step {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/screenshots");
    std::fs::create_dir_all(dir).map_err(e("screenshot dir"))?;
    let png = c.screenshot().await.map_err(e("screenshot"))?;
    std::fs::write(format!("{dir}/{name}.png"), png).map_err(e("screenshot"))?;
    Ok(())
}

/// Clicks the first element matching `css`.
async fn click(c: &Client, css: &str) -> Step {
    c.find(Locator::Css(css))
        .await
        .map_err(e(css))?
        .click()
        .await
        .map_err(e(css))?;
    Ok(())
}

async fn walk(app: &TestApp, c: &Client, cw: i64) -> Step {
    let t = &app.a.owner_token;
    sign_in(app, c).await?;

    // The grid.
    c.goto(&app.url("/settings/integrations/companies"))
        .await
        .map_err(e("grid"))?;
    until(
        c,
        "document.querySelectorAll('#rows tr').length > 0",
        "rows",
    )
    .await?;
    let (_, grid) = app.get("/api/v1/company-mapping?limit=500", t).await;
    let total = grid["total"].as_i64().unwrap();
    let count = js(c, "return document.getElementById('count').textContent").await?;
    check(
        count
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("{total} companies")),
        format!("company count {count} for {total}"),
    )?;
    check(
        js(
            c,
            "return getComputedStyle(document.querySelector('#rows td')).position",
        )
        .await?
            == "sticky",
        "the first column is sticky",
    )?;

    // Search narrows the rows to one company.
    let first = grid["rows"][0]["name"].as_str().unwrap().to_string();
    let search = c.find(Locator::Id("search")).await.map_err(e("search"))?;
    search.send_keys(&first).await.map_err(e("search"))?;
    until(
        c,
        &format!("document.querySelectorAll('#rows tr').length === 1 && document.querySelector('#rows tr td').textContent.startsWith({})", json!(first)),
        "search",
    )
    .await?;
    js(c, "const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input')); return 1").await?;
    until(
        c,
        &format!(
            "document.querySelectorAll('#rows tr').length === {}",
            total.min(50)
        ),
        "search cleared",
    )
    .await?;

    // Missing values: only the manual company has no ConnectWise link.
    js(c, &format!("const m = document.getElementById('missing'); m.value = '{cw}'; m.dispatchEvent(new Event('change')); return 1")).await?;
    until(
        c,
        "document.querySelectorAll('#rows tr').length === 1 && document.querySelector('#rows tr td').textContent.startsWith('Zeta Manual')",
        "Missing values",
    )
    .await?;

    // Link: the empty cell's popover lists ConnectWise companies; pick the first.
    let (_, list) = app
        .get(&format!("/api/v1/integrations/{cw}/companies"), t)
        .await;
    let (x, y) = (list[0].clone(), list[1].clone());
    c.find(Locator::Css("#rows td.cell"))
        .await
        .map_err(e("cell"))?
        .click()
        .await
        .map_err(e("cell"))?;
    until(
        c,
        "document.querySelectorAll('.pop li[role=option]').length > 1",
        "popover list",
    )
    .await?;
    let pop_search = c
        .find(Locator::Css(".pop input"))
        .await
        .map_err(e("popover search"))?;
    pop_search
        .send_keys(x["name"].as_str().unwrap())
        .await
        .map_err(e("popover search"))?;
    until(
        c,
        &format!("[...document.querySelectorAll('.pop li[role=option]')].some(l => l.textContent.startsWith({}))", json!(x["name"])),
        "popover search",
    )
    .await?;
    js(c, &format!("[...document.querySelectorAll('.pop li[role=option]')].find(l => l.textContent.startsWith({})).click(); return 1", json!(x["name"]))).await?;
    // Linked: the row leaves the Missing values view; show everything again.
    js(c, "const m = document.getElementById('missing'); m.value = ''; m.dispatchEvent(new Event('change')); return 1").await?;
    let s = c.find(Locator::Id("search")).await.map_err(e("search"))?;
    s.send_keys("Zeta Manual").await.map_err(e("search"))?;
    until(
        c,
        &format!("({ROW_TEXT})('Zeta Manual')?.[1] === {}", json!(x["name"])),
        "the linked cell",
    )
    .await?;

    // Swap: pick Y for the same cell; X is unlinked.
    zeta_cell(c).await?;
    until(
        c,
        "document.querySelectorAll('.pop li[role=option]').length > 1",
        "popover list",
    )
    .await?;
    c.find(Locator::Css(".pop input"))
        .await
        .map_err(e("popover search"))?
        .send_keys(y["name"].as_str().unwrap())
        .await
        .map_err(e("popover search"))?;
    until(
        c,
        &format!("[...document.querySelectorAll('.pop li[role=option]')].some(l => l.textContent.startsWith({}))", json!(y["name"])),
        "popover search",
    )
    .await?;
    js(c, &format!("[...document.querySelectorAll('.pop li[role=option]')].find(l => l.textContent.startsWith({})).click(); return 1", json!(y["name"]))).await?;
    until(
        c,
        &format!("({ROW_TEXT})('Zeta Manual')?.[1] === {}", json!(y["name"])),
        "the swapped cell",
    )
    .await?;
    check(
        unlinked_list(app, cw)
            .await
            .iter()
            .any(|u| u["external_id"] == x["external_id"]),
        "X unlinked by the swap",
    )?;

    // Unlink.
    zeta_cell(c).await?;
    let unlink = c
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css(".pop button.danger"))
        .await
        .map_err(e("Unlink button"))?;
    unlink.click().await.map_err(e("Unlink"))?;
    until(
        c,
        "({ROW_TEXT})('Zeta Manual')?.[1] === '—'"
            .replace("{ROW_TEXT}", ROW_TEXT)
            .as_str(),
        "the unlinked cell",
    )
    .await?;

    // Advanced Quick Match: X and Y are unlinked, and their old portal companies keep their
    // names: both come back as "same name" at 100 %.
    js(c, "const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input')); return 1").await?;
    c.find(Locator::Id("qm-open"))
        .await
        .map_err(e("Quick Match"))?
        .click()
        .await
        .map_err(e("Quick Match"))?;
    until(c, "document.getElementById('qm').open && document.querySelectorAll('#qm-rows tr').length >= 2", "suggestions").await?;
    check(
        js(c, "return document.getElementById('threshold').value").await? == "70"
            && js(
                c,
                "return document.getElementById('threshold-value').textContent",
            )
            .await?
                == "70",
        "the slider starts at 70 %",
    )?;
    js(c, "const r = document.getElementById('threshold'); r.value = 100; r.dispatchEvent(new Event('input')); r.dispatchEvent(new Event('change')); return 1").await?;
    until(
        c,
        "document.getElementById('qm-summary').textContent.includes('at 100 %')",
        "a scan at 100 %",
    )
    .await?;
    let at_100 = js(c, "return document.querySelectorAll('#qm-rows tr').length").await?;
    // Search the suggestions down to X; Clear All acts on the visible row only.
    c.find(Locator::Id("qm-search"))
        .await
        .map_err(e("suggestion search"))?
        .send_keys(x["name"].as_str().unwrap())
        .await
        .map_err(e("suggestion search"))?;
    until(
        c,
        "document.querySelectorAll('#qm-rows tr').length === 1",
        "one suggestion visible",
    )
    .await?;
    c.find(Locator::Id("qm-none"))
        .await
        .map_err(e("Clear All"))?
        .click()
        .await
        .map_err(e("Clear All"))?;
    let apply_text = js(c, "return document.getElementById('qm-apply').textContent").await?;
    check(
        apply_text
            == json!(format!(
                "Apply ({})",
                at_100.as_u64().unwrap_or(0).saturating_sub(1)
            )),
        format!("Clear All cleared only the visible row: {apply_text}"),
    )?;
    c.find(Locator::Id("qm-all"))
        .await
        .map_err(e("Select All"))?
        .click()
        .await
        .map_err(e("Select All"))?;
    c.find(Locator::Id("qm-apply"))
        .await
        .map_err(e("Apply"))?
        .click()
        .await
        .map_err(e("Apply"))?;
    until(c, "!document.getElementById('qm').open && document.querySelector('.toast')?.textContent.includes('links applied')", "applied").await?;
    let (_, missing) = app
        .get(&format!("/api/v1/company-mapping?missing={cw}"), t)
        .await;
    check(
        missing["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["name"] != x["name"] && r["name"] != y["name"]),
        format!("X and Y linked again: {missing}"),
    )?;
    // The grid refreshed in place: X's portal company shows X again.
    js(c, &format!("const s = document.getElementById('search'); s.value = {}; s.dispatchEvent(new Event('input')); return 1", json!(x["name"]))).await?;
    until(
        c,
        &format!(
            "({ROW_TEXT})({})?.[1] === {}",
            json!(x["name"]),
            json!(x["name"])
        ),
        "X in the grid",
    )
    .await?;

    // Manage Defaults from the row: the caption names what the company inherits; an
    // override is saved and shown, the caption stays.
    js(c, &format!("[...document.querySelectorAll('#rows a')].find(a => a.getAttribute('aria-label') === 'Manage Defaults for ' + {}).click(); return 1", json!(x["name"]))).await?;
    until(
        c,
        "location.pathname.startsWith('/companies/')",
        "the company page",
    )
    .await?;
    let caption = c
        .find(Locator::Id("inherited"))
        .await
        .map_err(e("caption"))?
        .text()
        .await
        .map_err(e("caption"))?;
    check(
        caption == "Inheriting from ConnectWise Manage: Viewer",
        format!("the inherited caption: {caption}"),
    )?;
    js(c, "const s = document.getElementById('default_import_role'); s.value = [...s.options].find(o => o.text === 'Standard User').value; return 1").await?;
    c.find(Locator::Css("#defaults button[type=submit]"))
        .await
        .map_err(e("Save"))?
        .click()
        .await
        .map_err(e("Save"))?;
    until(c, "location.search.includes('msg=defaults')", "saved").await?;
    let body = c.source().await.map_err(e("company page"))?;
    check(
        body.contains("Standard User (set for this company)")
            && body.contains("Inheriting from ConnectWise Manage: Viewer"),
        "the override and the caption",
    )?;
    // Spec 2.10: the users' Source, contact type, role and why, last sync; one caption
    // per linked provider saying what its new contacts get and why.
    until(
        c,
        "[...document.querySelectorAll('#inheritance li.caption')].some(li => li.textContent === \"New ConnectWise Manage contacts of this company get role Standard User because this company's Default Import Role overrides ConnectWise Manage's rules.\")",
        "the inheritance caption",
    )
    .await?;
    until(
        c,
        "(() => { const h = [...document.querySelectorAll('table[aria-label=Users] thead th')].map(th => th.textContent); return ['Source', 'Contact type', 'Role', 'Why this role', 'Last synced'].every(x => h.includes(x)); })()",
        "the users table's columns",
    )
    .await?;
    until(
        c,
        "[...document.querySelectorAll('table[aria-label=Users] tbody tr')].some(tr => tr.querySelector('td.source')?.textContent === 'ConnectWise Manage' && tr.querySelector('td.role')?.textContent !== '' && /ConnectWise Manage/.test(tr.querySelector('td.why')?.textContent || '') && tr.cells[6].textContent !== '—')",
        "an imported user with its source, role, why and last sync",
    )
    .await?;
    shot(c, "company-users").await?;
    let home = mspbridge_domain::CompanyId(x["linked_company_id"].as_i64().unwrap());
    let saved = app
        .db
        .store
        .company_defaults(app.a.id, home)
        .await
        .map_err(e("defaults"))?;
    check(
        saved.default_import_role.is_some(),
        "the override is stored",
    )?;

    // Import from ConnectWise: a company the sync skipped (inactive) becomes a portal company.
    let unlinked = unlinked_list(app, cw).await;
    let fresh = unlinked[0]["name"].as_str().unwrap_or_default().to_string();
    check(
        !fresh.is_empty(),
        "an unlinked integration company to import",
    )?;
    c.goto(&app.url("/companies"))
        .await
        .map_err(e("companies"))?;
    c.find(Locator::Css("button.import-open"))
        .await
        .map_err(e("Import"))?
        .click()
        .await
        .map_err(e("Import"))?;
    until(c, "document.getElementById('imp').open && document.querySelectorAll('#imp-rows tr').length > 0", "the import list").await?;
    c.find(Locator::Id("imp-qm"))
        .await
        .map_err(e("Quick Match in the dialog"))?
        .click()
        .await
        .map_err(e("Quick Match"))?;
    c.find(Locator::Id("imp-search"))
        .await
        .map_err(e("import search"))?
        .send_keys(&fresh)
        .await
        .map_err(e("import search"))?;
    until(
        c,
        "document.querySelectorAll('#imp-rows tr').length >= 1",
        "the searched row",
    )
    .await?;
    js(c, &format!("const r = [...document.querySelectorAll('#imp-rows tr')].find(r => r.cells[1].textContent === {}); r.querySelector('input[type=text]').value = ''; r.querySelector('input[type=text]').dispatchEvent(new Event('change')); const b = r.querySelector('input[type=checkbox]'); if (!b.checked) b.click(); return 1", json!(fresh))).await?;
    until(
        c,
        "document.getElementById('imp-go').textContent.startsWith('Import Selected (')",
        "the count",
    )
    .await?;
    c.find(Locator::Id("imp-go"))
        .await
        .map_err(e("Import Selected"))?
        .click()
        .await
        .map_err(e("Import Selected"))?;
    until(c, &format!("!document.getElementById('imp').open && [...document.querySelectorAll('table[aria-label=Companies] a')].some(a => a.textContent === {})", json!(fresh)), "the imported company listed").await?;
    let after = unlinked_list(app, cw).await;
    check(
        !after.iter().any(|c| c["name"] == fresh.as_str()),
        format!("the imported company is linked now: {after:?}"),
    )?;

    // The link history lists the import and the Quick Match; Undo puts the batch back once.
    c.goto(&app.url("/settings/integrations/companies/history"))
        .await
        .map_err(e("history"))?;
    const UNDO: &str = "document.querySelector('button[aria-label^=\"Undo Quick Match\"]')";
    until(
        c,
        &format!("document.querySelector('tr[data-action=import]') !== null && {UNDO} !== null"),
        "the history with the import and an Undo",
    )
    .await?;
    js(c, &format!("{UNDO}.click(); return 1")).await?;
    until(
        c,
        &format!("location.search.includes('undone=') && document.querySelector('[role=status]')?.textContent.includes('Undone: ') && {UNDO} === null"),
        "the batch undone, no second Undo",
    )
    .await?;
    check(
        unlinked_list(app, cw)
            .await
            .iter()
            .any(|u| u["external_id"] == x["external_id"]),
        "X unlinked again by the undo",
    )?;

    // Deleting the imported company blocks its integration company; Blocked Companies
    // unblocks it.
    let (_, all) = app
        .get(
            &format!(
                "/api/v1/integrations/{cw}/companies?search={}",
                fresh.replace(' ', "%20")
            ),
            t,
        )
        .await;
    let portal = all
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == fresh.as_str())
        .and_then(|c| c["linked_company_id"].as_i64())
        .ok_or_else(|| format!("the imported company's portal id: {all}"))?;
    c.goto(&app.url(&format!("/companies/{portal}")))
        .await
        .map_err(e("company page"))?;
    // Delete asks on a page of its own, then says what happened.
    click(c, "#delete-company").await?;
    until(
        c,
        "document.getElementById('confirm-delete') !== null",
        "the delete confirmation",
    )
    .await?;
    click(c, "#confirm-delete").await?;
    until(
        c,
        "location.pathname === '/companies' && document.querySelector('.alert.ok')?.textContent.includes('was deleted')",
        "deleted",
    )
    .await?;
    c.goto(&app.url("/companies/blocked"))
        .await
        .map_err(e("blocked page"))?;
    let row = format!(
        "[...document.querySelectorAll('table[aria-label=\"Blocked companies\"] tr')].find(r => r.cells[0]?.textContent === {})",
        json!(fresh)
    );
    until(
        c,
        &format!("{row} !== undefined"),
        "the blocked company listed",
    )
    .await?;
    js(
        c,
        &format!("{row}.querySelector('button').click(); return 1"),
    )
    .await?;
    until(
        c,
        &format!("location.pathname === '/companies/blocked' && {row} === undefined"),
        "unblocked",
    )
    .await?;
    let (_, blocked) = app.get("/api/v1/companies/blocked", t).await;
    check(
        blocked.as_array().is_some_and(|b| b.is_empty()),
        format!("nothing blocked after Unblock: {blocked}"),
    )
}

#[tokio::test]
async fn the_mapping_grid_in_chromium() {
    let Some((_driver, webdriver)) = start_chromedriver().await else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromedriver is not installed (apt-get install chromium chromium-driver)");
        }
        eprintln!(
            "SKIPPED: chromedriver is not on PATH (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let app = TestApp::start(mspbridge_store::test_support::sqlite().await.unwrap()).await;
    let cw = imported(&app).await;
    let viewer = app
        .db
        .store
        .list_roles(app.a.id)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name == "Viewer")
        .unwrap()
        .id;
    let (s, v) = app
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/integrations/{cw}/options"),
            &app.a.owner_token,
            Some(json!({"interval_minutes": 5, "auto_import_contacts": true, "default_role_id": viewer})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // Contacts imported with the role chain, for the company page's user table.
    full_pass_engine(&app).tick().await.unwrap().expect("due");
    let (s, _) = app
        .post(
            "/api/v1/companies",
            &app.a.owner_token,
            json!({"name": "Zeta Manual Holdings"}),
        )
        .await;
    assert_eq!(s, 201);
    let c = browser(&webdriver).await;
    let result = walk(&app, &c, cw).await;
    if let Err(what) = &result {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/browser-screenshots"
        );
        let _ = std::fs::create_dir_all(dir);
        if let Ok(png) = c.screenshot().await {
            let path = format!("{dir}/mapping-grid.png");
            let _ = std::fs::write(&path, png);
            eprintln!("screenshot: {path}");
        }
        let _ = c.clone().close().await;
        panic!("{what}");
    }
    let _ = c.close().await;
}

/// Every admin page's main action in Chromium, with a screenshot of each page under
/// `target/screenshots/`: the integration page's tabs (Test, Runs with the legend, Options,
/// Log), Companies (search, delete with confirmation), Tickets (filters), Attention
/// (Retry of a refused write), Technicians (one edit at a time), a 404 in the app shell,
/// Companies at 390 px and the mapping grid's columns at 1440 px.
async fn pages(app: &TestApp, c: &Client, cw: i64) -> Step {
    let t = &app.a.owner_token;
    sign_in(app, c).await?;

    // Integration: Test on the Overview tab shows its result at the button.
    c.goto(&app.url(&format!("/settings/integrations/{cw}")))
        .await
        .map_err(e("integration"))?;
    click(c, "#test-button").await?;
    until(
        c,
        "document.querySelector('#test-result .alert')?.textContent.includes('Connected') && document.querySelector('.alert.ok')?.textContent.includes('Connection tested')",
        "the test result at the Test button",
    )
    .await?;
    shot(c, "integration-overview").await?;
    click(c, "nav.tabs a[href$='tab=runs']").await?;
    until(
        c,
        "document.getElementById('legend') && document.querySelector('tr[data-run]')",
        "runs with the legend",
    )
    .await?;
    shot(c, "integration-runs").await?;
    click(c, "nav.tabs a[href$='tab=options']").await?;
    until(
        c,
        "document.querySelector('input[name=companies]')",
        "the options",
    )
    .await?;
    shot(c, "integration-options").await?;
    // Options: a choice from the PSA's list (multi-select), saved.
    js(
        c,
        "const s = document.getElementById('exclude_company_types'); [...s.options].find(o => o.value === 'Vendor').selected = true; s.form.querySelector('button:not([type=button])').click(); return 1",
    )
    .await?;
    until(
        c,
        "document.querySelector('.alert.ok')?.textContent.includes('Sync options saved') && [...document.getElementById('exclude_company_types').selectedOptions].some(o => o.value === 'Vendor')",
        "options saved with the choice",
    )
    .await?;
    shot(c, "integration-options-saved").await?;
    click(c, "nav.tabs a[href$='tab=log']").await?;
    until(
        c,
        "document.querySelector('table[aria-label=Events] tbody tr')",
        "the log",
    )
    .await?;
    shot(c, "integration-log").await?;

    // Companies: search.
    c.goto(&app.url("/companies"))
        .await
        .map_err(e("companies"))?;
    let search = c
        .find(Locator::Css("input[name=q]"))
        .await
        .map_err(e("search"))?;
    search.send_keys("Zeta").await.map_err(e("search"))?;
    click(c, "form[role=search] button").await?;
    until(
        c,
        "document.getElementById('company-count').textContent.startsWith('1 of ') && document.querySelectorAll('table[aria-label=Companies] tbody tr').length === 1",
        "one company found",
    )
    .await?;
    shot(c, "companies").await?;
    click(c, "table[aria-label=Companies] tbody a").await?;
    until(
        c,
        "document.getElementById('delete-company')",
        "company page",
    )
    .await?;
    shot(c, "company").await?;
    click(c, "#delete-company").await?;
    until(
        c,
        "document.getElementById('confirm-delete')",
        "confirmation",
    )
    .await?;
    shot(c, "company-delete").await?;
    click(c, "#confirm-delete").await?;
    until(
        c,
        "document.querySelector('.alert.ok')?.textContent.includes('Zeta Manual Holdings was deleted')",
        "what happened",
    )
    .await?;
    shot(c, "companies-deleted").await?;

    // A ticket ConnectWise refuses (its board is gone) shows on Tickets and Attention.
    let (s, v) = app
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/integrations/{cw}/options"),
            t,
            Some(json!({"interval_minutes": 5, "tickets": true, "ticket_defaults": {
                "board": "Service Desk", "status": "New", "priority": "Priority 3 - Normal Response"}})),
        )
        .await;
    check(s == 200, format!("ticket options: {v}"))?;
    let (_, companies) = app.get("/api/v1/companies", t).await;
    let company = companies[0]["id"].as_i64().unwrap_or_default();
    let boards = app.sandbox.with_data(|d| {
        let all = d.boards.clone();
        d.boards.retain(|b| b.name != "Service Desk");
        all
    });
    let (s, v) = app
        .post(
            "/api/v1/tickets",
            t,
            json!({"company_id": company, "summary": "Printer on fire"}),
        )
        .await;
    check(s == 201, format!("ticket: {v}"))?;
    full_pass_engine(app)
        .drain_outbox()
        .await
        .map_err(e("drain"))?;
    c.goto(&app.url("/tickets?state=all&q=printer"))
        .await
        .map_err(e("tickets"))?;
    until(
        c,
        "document.getElementById('ticket-count').textContent.startsWith('1 ticket,') && document.querySelector('table[aria-label=Tickets] tbody').textContent.includes('ConnectWise Manage (not written yet)')",
        "the filtered list",
    )
    .await?;
    shot(c, "tickets").await?;
    c.goto(&app.url("/attention"))
        .await
        .map_err(e("attention"))?;
    until(
        c,
        "document.querySelector('nav.side .count')?.textContent === '1' && document.querySelector('tr[data-write]')",
        "the failed write and the badge",
    )
    .await?;
    shot(c, "attention").await?;
    // The board is back in ConnectWise: Retry writes the ticket.
    app.sandbox.with_data(move |d| d.boards = boards);
    click(c, "tr[data-write] form[action$='/retry'] button").await?;
    until(
        c,
        "document.querySelector('.alert.ok')?.textContent.includes('Queued again') && !document.querySelector('tr[data-write]')",
        "retried",
    )
    .await?;
    shot(c, "attention-retried").await?;

    // Technicians: one edit at a time.
    c.goto(&app.url("/technicians"))
        .await
        .map_err(e("technicians"))?;
    let linked = "[...document.querySelectorAll('tr[data-technician]')].find(r => r.textContent.includes('edits written back'))";
    until(c, &format!("{linked} !== undefined"), "a linked technician").await?;
    js(
        c,
        &format!("{linked}.querySelector('a.btn').click(); return 1"),
    )
    .await?;
    until(
        c,
        "document.getElementById('edit-row') && document.querySelectorAll('a.btn[href*=edit]').length === 0",
        "one row in edit",
    )
    .await?;
    shot(c, "technicians-edit").await?;
    js(
        c,
        "const n = document.getElementById('tech-name'); n.value = 'Pat Field'; n.form.querySelector('button').click(); return 1",
    )
    .await?;
    until(
        c,
        "document.querySelector('.alert.ok')?.textContent.includes('Technician saved') && document.body.textContent.includes('Pat Field')",
        "saved",
    )
    .await?;
    shot(c, "technicians").await?;

    // An error page inside the app shell, with a way back.
    c.goto(&app.url("/companies/999999"))
        .await
        .map_err(e("404"))?;
    until(
        c,
        "document.querySelector('h1')?.textContent === 'Page not found' && document.querySelector('nav.side a[aria-current=page]')",
        "the 404 page in the shell",
    )
    .await?;
    shot(c, "error-404").await?;

    // 390 px: nothing wider than the screen but scrollable tables.
    c.set_window_size(390, 844).await.map_err(e("390 px"))?;
    c.goto(&app.url("/companies"))
        .await
        .map_err(e("companies"))?;
    until(
        c,
        "document.documentElement.scrollWidth <= window.innerWidth + 1",
        "no sideways scrolling at 390 px",
    )
    .await?;
    shot(c, "companies-390px").await?;
    c.goto(&app.url(&format!("/settings/integrations/{cw}")))
        .await
        .map_err(e("integration"))?;
    until(
        c,
        "document.documentElement.scrollWidth <= window.innerWidth + 1",
        "the integration page at 390 px",
    )
    .await?;
    shot(c, "integration-390px").await?;

    // 1440 px: every column of the mapping grid visible without scrolling, with three
    // integrations (two more ConnectWise connections, synced, so their cells are filled).
    for nickname in ["CW East", "CW West"] {
        let id = app.connect_cw(t).await["id"].as_i64().unwrap_or_default();
        app.call(
            reqwest::Method::PATCH,
            &format!("/api/v1/integrations/{id}"),
            t,
            Some(json!({"name": nickname})),
        )
        .await;
        app.call(
            reqwest::Method::PUT,
            &format!("/api/v1/integrations/{id}/options"),
            t,
            Some(json!({"interval_minutes": 5})),
        )
        .await;
        // Runs due integrations until the new one has had its run.
        let mut synced = false;
        for _ in 0..5 {
            match full_pass_engine(app).tick().await.map_err(e("sync"))? {
                Some(run) if run.integration_id.0 == id => {
                    synced = true;
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        check(synced, format!("a run of {nickname}"))?;
    }
    c.set_window_size(1440, 900).await.map_err(e("1440 px"))?;
    c.goto(&app.url("/settings/integrations/companies"))
        .await
        .map_err(e("grid"))?;
    until(
        c,
        "document.querySelectorAll('#rows tr').length > 0 && document.querySelectorAll('table.map thead th').length >= 4 && [...document.querySelectorAll('table.map thead th')].some(th => th.textContent.includes('CW West')) && (() => { const w = document.querySelector('.mapwrap').getBoundingClientRect().right; return [...document.querySelectorAll('table.map thead th')].every(th => th.getBoundingClientRect().right <= w + 1); })()",
        "the grid's columns (three integrations) visible at 1440 px",
    )
    .await?;
    shot(c, "mapping-1440px").await
}

#[tokio::test]
async fn admin_pages_in_chromium() {
    let Some((_driver, webdriver)) = start_chromedriver().await else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromedriver is not installed (apt-get install chromium chromium-driver)");
        }
        eprintln!(
            "SKIPPED: chromedriver is not on PATH (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let app = TestApp::start(mspbridge_store::test_support::sqlite().await.unwrap()).await;
    let cw = imported(&app).await;
    let (s, _) = app
        .post(
            "/api/v1/companies",
            &app.a.owner_token,
            json!({"name": "Zeta Manual Holdings"}),
        )
        .await;
    assert_eq!(s, 201);
    let c = browser(&webdriver).await;
    let result = pages(&app, &c, cw).await;
    if let Err(what) = &result {
        let _ = shot(&c, "failed-step").await;
        let _ = c.clone().close().await;
        panic!("{what}");
    }
    let _ = c.close().await;
}

/// The RMM pages with Datto RMM synced after Autotask: the Integrations card's counts, the
/// Devices page (Map Sites: map a suggested site; Quick Create; Import Selected), the
/// devices list and a device, the alerts view with Resolve, and the mapping grid with the
/// Datto column.
async fn rmm_pages(app: &TestApp, c: &Client, datto: i64) -> Step {
    sign_in(app, c).await?;
    until(
        c,
        "document.querySelector('.rmm-counts a')?.textContent.includes('open alert')",
        "the Datto card's device and alert counts",
    )
    .await?;
    click(c, ".rmm-counts a").await?;
    until(
        c,
        "document.getElementById('type-mappings') && document.getElementById('unmapped')",
        "the device types, staging and the unmapped-sites notice",
    )
    .await?;
    shot(c, "rmm-devices").await?;

    // Map Sites: the first suggestion, mapped at once.
    c.goto(&app.url(&format!(
        "/settings/integrations/{datto}/devices?view=sites&filter=unmapped"
    )))
    .await
    .map_err(e("map sites"))?;
    until(
        c,
        "document.querySelector('#sites button')?.textContent.startsWith('Map to')",
        "a suggested mapping",
    )
    .await?;
    shot(c, "rmm-map-sites").await?;
    click(c, "#sites button").await?;
    until(
        c,
        "document.getElementById('notice')?.textContent.includes('Site mapped')",
        "the site mapped",
    )
    .await?;

    // Quick Create, then Import Selected of the first staged device.
    c.goto(&app.url(&format!("/settings/integrations/{datto}/devices")))
        .await
        .map_err(e("devices page"))?;
    js(
        c,
        "[...document.querySelectorAll('form')].find(f => f.querySelector('input[name=action][value=quick_create]')).querySelector('button').click(); return 1",
    )
    .await?;
    until(
        c,
        "document.getElementById('notice')?.textContent.includes('Quick Create made and mapped')",
        "types created and mapped",
    )
    .await?;
    js(
        c,
        "document.querySelector('#staged-form input[name=device]').click(); return 1",
    )
    .await?;
    click(c, "#import-selected").await?;
    until(
        c,
        "document.getElementById('notice')?.textContent.includes('Imported 1 device.')",
        "one device imported",
    )
    .await?;
    shot(c, "rmm-imported").await?;

    // The device list and a device.
    c.goto(&app.url("/devices")).await.map_err(e("devices"))?;
    until(
        c,
        "document.querySelector('table[aria-label=Devices] tbody a')",
        "the imported device listed",
    )
    .await?;
    shot(c, "devices").await?;
    click(c, "table[aria-label=Devices] tbody a").await?;
    until(c, "document.getElementById('online')", "the device page").await?;
    // Refresh reads the device alone from Datto now.
    click(c, "#refresh-device").await?;
    until(
        c,
        "location.search.includes('msg=refreshed') && document.getElementById('refresh-online')",
        "the device refreshed from Datto RMM",
    )
    .await?;
    shot(c, "device").await?;

    // Alerts by priority; Resolve queues it.
    c.goto(&app.url("/alerts")).await.map_err(e("alerts"))?;
    until(
        c,
        "document.querySelector('table[aria-label=Alerts] tbody .badge')?.textContent === 'Critical'",
        "alerts, most urgent first",
    )
    .await?;
    click(c, "table[aria-label=Alerts] tbody form button").await?;
    until(
        c,
        "[...document.querySelectorAll('table[aria-label=Alerts] .badge')].some(b => b.textContent.includes('resolving'))",
        "the alert resolving",
    )
    .await?;
    shot(c, "alerts").await?;

    // The mapping grid has the Datto RMM column.
    c.goto(&app.url("/settings/integrations/companies"))
        .await
        .map_err(e("grid"))?;
    until(
        c,
        "[...document.querySelectorAll('th')].some(t => t.textContent.includes('Datto RMM'))",
        "the Datto RMM column on the grid",
    )
    .await?;
    shot(c, "mapping-with-rmm").await?;

    // Link a site on the grid: a portal company without a Datto site gets the unmapped site
    // of its name from its Datto cell's popover; the mapping queues Datto's device sync.
    let t = &app.a.owner_token;
    let (_, sites) = app
        .get(
            &format!("/api/v1/integrations/{datto}/companies?unlinked=true&limit=500"),
            t,
        )
        .await;
    let (_, companies) = app.get("/api/v1/companies?limit=1000", t).await;
    let names: Vec<&str> = companies
        .as_array()
        .or_else(|| companies["companies"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let site = sites
        .as_array()
        .unwrap()
        .iter()
        .find(|s| names.contains(&s["name"].as_str().unwrap_or_default()))
        .ok_or("an unmapped Datto site named like a portal company")?
        .clone();
    let name = site["name"].as_str().unwrap_or_default().to_string();
    let before = app
        .db
        .store
        .schedule(app.a.id, mspbridge_domain::IntegrationId(datto))
        .await
        .map_err(|e| e.to_string())?
        .map(|s| s.next_run_at);
    let search = c.find(Locator::Id("search")).await.map_err(e("search"))?;
    search.send_keys(&name).await.map_err(e("search"))?;
    until(
        c,
        &format!("document.querySelectorAll('#rows tr').length >= 1 && [...document.querySelectorAll('#rows tr')].every(r => r.cells[0].textContent.trim().startsWith({}))", json!(name)),
        "the company's row",
    )
    .await?;
    let col = js(c, "return [...document.querySelectorAll('thead th')].findIndex(t => t.textContent.includes('Datto RMM'))").await?;
    js(
        c,
        &format!("document.querySelector('#rows tr').cells[{col}].click(); return 1"),
    )
    .await?;
    until(
        c,
        "document.querySelectorAll('.pop li[role=option]').length > 0",
        "the Datto popover",
    )
    .await?;
    c.find(Locator::Css(".pop input"))
        .await
        .map_err(e("popover search"))?
        .send_keys(&name)
        .await
        .map_err(e("popover search"))?;
    until(
        c,
        &format!("[...document.querySelectorAll('.pop li[role=option]')].some(l => l.textContent.startsWith({}))", json!(name)),
        "the site in the popover",
    )
    .await?;
    js(c, &format!("[...document.querySelectorAll('.pop li[role=option]')].find(l => l.textContent.startsWith({})).click(); return 1", json!(name))).await?;
    until(
        c,
        &format!(
            "document.querySelector('#rows tr').cells[{col}].textContent.trim() === {}",
            json!(name)
        ),
        "the Datto cell linked",
    )
    .await?;
    shot(c, "mapping-rmm-linked").await?;
    let (_, linked) = app
        .get(
            &format!("/api/v1/integrations/{datto}/companies?limit=500"),
            t,
        )
        .await;
    check(
        linked
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["external_id"] == site["external_id"] && s["linked_company_id"].is_i64()),
        "the site linked",
    )?;
    let after = app
        .db
        .store
        .schedule(app.a.id, mspbridge_domain::IntegrationId(datto))
        .await
        .map_err(|e| e.to_string())?
        .map(|s| s.next_run_at);
    check(
        after.is_some_and(|a| a <= chrono::Utc::now()) && after != before,
        format!("a device sync queued by the mapping: {before:?} → {after:?}"),
    )
}

#[tokio::test]
async fn rmm_pages_in_chromium() {
    let Some((_driver, webdriver)) = start_chromedriver().await else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromedriver is not installed (apt-get install chromium chromium-driver)");
        }
        eprintln!(
            "SKIPPED: chromedriver is not on PATH (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let (_vendors, config) = rmm_vendors().await;
    let app = TestApp::start_configured(
        mspbridge_store::test_support::sqlite().await.unwrap(),
        false,
        config,
    )
    .await;
    let autotask = connect_json(
        &app,
        json!({"provider": "autotask", "credentials": {
            "username": mspbridge_providers::autotask::sandbox::DEMO_USERNAME,
            "secret": mspbridge_providers::autotask::sandbox::DEMO_SECRET,
            "integration_code": mspbridge_providers::autotask::sandbox::DEMO_INTEGRATION_CODE}}),
    )
    .await;
    let (s, v) = put_options(
        &app,
        autotask,
        json!({"interval_minutes": 30, "contacts": false, "technicians": false, "skip_inactive_companies": false}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    sync(&app, autotask).await;
    let datto = connect_json(
        &app,
        json!({"provider": "datto_rmm", "credentials": {
            "platform": mspbridge_providers::datto_rmm::sandbox::DEMO_PLATFORM,
            "api_key": mspbridge_providers::datto_rmm::sandbox::DEMO_API_KEY,
            "api_secret": mspbridge_providers::datto_rmm::sandbox::DEMO_API_SECRET}}),
    )
    .await;
    let (s, v) = put_options(
        &app,
        datto,
        json!({"interval_minutes": 5, "devices": true, "alerts": true, "contacts": false, "technicians": false}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    sync(&app, datto).await;
    let c = browser(&webdriver).await;
    let result = rmm_pages(&app, &c, datto).await;
    if let Err(what) = &result {
        let _ = shot(&c, "failed-step-rmm").await;
        let _ = c.clone().close().await;
        panic!("{what}");
    }
    let _ = c.close().await;
}

/// The connect wizard (spec 2.3) for the ConnectWise sandbox: credentials (a wrong key
/// refused with the input kept) → Test (the per-area permission report) → options (a
/// refusal shown at its field, the input kept; saved with sync off) → enable sync.
/// Screenshots `connect-1-credentials` … `connect-4-enable` under `target/screenshots/`.
async fn wizard(app: &TestApp, c: &Client) -> Step {
    sign_in(app, c).await?;
    c.goto(&app.url("/settings/integrations/connect/connectwise_manage"))
        .await
        .map_err(e("connect page"))?;
    let current = "document.querySelector('ol.stepper li[aria-current=step]')?.textContent.trim()";
    until(c, &format!("{current}.endsWith('Credentials')"), "step 1").await?;
    let creds = app.good_credentials();
    let fill = |private: &str| {
        format!(
            "const v = {{site: {}, company_id: {}, public_key: {}, private_key: {}, client_id: {}}}; for (const [k, x] of Object.entries(v)) document.getElementById('cred_' + k).value = x; document.querySelector('form.card button[type=submit]').click(); return 1",
            creds["site"],
            creds["company_id"],
            creds["public_key"],
            json!(private),
            creds["client_id"]
        )
    };
    js(c, &fill("not-the-key")).await?;
    until(
        c,
        &format!("document.querySelector('.alert.error') !== null && document.getElementById('cred_site').value === {} && {current}.endsWith('Credentials')", creds["site"]),
        "a wrong key refused, the input kept",
    )
    .await?;
    shot(c, "connect-1-credentials").await?;
    js(c, &fill(creds["private_key"].as_str().unwrap())).await?;
    until(
        c,
        &format!("location.search.includes('setup=test') && {current}.endsWith('Test') && document.querySelectorAll('#setup-test table[aria-label=\"Permission check\"] tbody tr').length > 0"),
        "step 2: the permission report",
    )
    .await?;
    shot(c, "connect-2-test").await?;
    click(c, "#setup-next").await?;
    until(
        c,
        &format!("{current}.endsWith('Options') && document.querySelector('input[name=enabled]') === null"),
        "step 3: options without the sync switch",
    )
    .await?;
    // Contact auto-import without a default role: refused at the field, input kept.
    js(c, "document.querySelector('input[name=auto_import_contacts]').checked = true; document.getElementById('default_role_id').value = ''; document.getElementById('save-options').click(); return 1").await?;
    until(
        c,
        &format!("document.getElementById('default_role_id-error') !== null && !/options\\./.test(document.getElementById('default_role_id-error').textContent) && !/options\\./.test(document.querySelector('.alert.error').textContent) && document.querySelector('input[name=auto_import_contacts]').checked && {current}.endsWith('Options')"),
        "the refusal at its field, in words, with the input kept",
    )
    .await?;
    shot(c, "connect-3-options").await?;
    js(c, "const s = document.getElementById('default_role_id'); s.value = [...s.options].find(o => o.text === 'Viewer').value; document.getElementById('save-options').click(); return 1").await?;
    until(
        c,
        &format!(
            "{current}.endsWith('Enable sync') && document.getElementById('enable-sync') !== null"
        ),
        "step 4",
    )
    .await?;
    shot(c, "connect-4-enable").await?;
    let id: i64 = js(c, "return location.pathname.split('/')[3]")
        .await?
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("the integration id in the URL")?;
    let (_, o) = app
        .get(
            &format!("/api/v1/integrations/{id}/options"),
            &app.a.owner_token,
        )
        .await;
    check(
        o["options"]["enabled"] == false && o["options"]["auto_import_contacts"] == true,
        format!("options saved with sync still off: {o}"),
    )?;
    click(c, "#enable-sync").await?;
    until(
        c,
        "location.search.includes('tab=runs') && document.querySelector('.alert.ok')?.textContent.includes('Sync enabled')",
        "sync enabled",
    )
    .await?;
    let (_, o) = app
        .get(
            &format!("/api/v1/integrations/{id}/options"),
            &app.a.owner_token,
        )
        .await;
    check(
        o["options"]["enabled"] == true,
        format!("sync on after the last step: {o}"),
    )
}

#[tokio::test]
async fn the_connect_wizard_in_chromium() {
    let Some((_driver, webdriver)) = start_chromedriver().await else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromedriver is not installed (apt-get install chromium chromium-driver)");
        }
        eprintln!(
            "SKIPPED: chromedriver is not on PATH (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let app = TestApp::start(mspbridge_store::test_support::sqlite().await.unwrap()).await;
    let c = browser(&webdriver).await;
    let result = wizard(&app, &c).await;
    if let Err(what) = &result {
        let _ = shot(&c, "failed-wizard-step").await;
        let _ = c.clone().close().await;
        panic!("{what}");
    }
    let _ = c.close().await;
}

/// Microsoft 365 in Chromium: Company M365 Setup (Connect through the sandbox's consent
/// page, back to the setup page with the company connected), partner discovery, a
/// company's Microsoft 365 tab (Secure Score with its chart, the controls filtered by
/// severity, Import Selected of a user) and the Secure Score overview. Screenshots
/// `m365-*` under `target/screenshots/`.
async fn m365_pages(app: &TestApp, c: &Client, id: i64, company: i64, tenant: &str) -> Step {
    sign_in(app, c).await?;
    c.goto(&app.url(&format!("/settings/integrations/{id}")))
        .await
        .map_err(e("integration page"))?;
    click(c, "#m365-setup-link").await?;
    until(
        c,
        "document.getElementById('progress-label')?.textContent.includes('0 of 3 companies connected')",
        "the setup page's progress",
    )
    .await?;
    shot(c, "m365-setup").await?;
    click(c, &format!("#company-{company} button[value=connect]")).await?;
    until(
        c,
        "document.querySelector('select[name=tenant]') && document.querySelector('button[value=accept]')",
        "Microsoft's (the sandbox's) consent page",
    )
    .await?;
    js(
        c,
        &format!("document.querySelector('select[name=tenant]').value = '{tenant}'; return 1"),
    )
    .await?;
    shot(c, "m365-consent").await?;
    click(c, "button[value=accept]").await?;
    until(
        c,
        "document.getElementById('flash')?.textContent.includes('Connected')",
        "back on the setup page, connected",
    )
    .await?;
    until(
        c,
        "document.getElementById('progress-label')?.textContent.includes('1 of 3 companies connected')",
        "the progress counting the company",
    )
    .await?;

    // Partner discovery lists the customer tenants with proposals.
    click(c, "#discover").await?;
    until(
        c,
        "document.querySelectorAll('#customer-tenants tbody tr').length >= 8 && document.querySelector('#customer-tenants .badge.b-connected')",
        "the customer tenants, the connected one marked",
    )
    .await?;
    shot(c, "m365-discovery").await?;

    // The first sync, then the company's tab.
    sync_at(app, id, chrono::Duration::zero()).await;
    c.goto(&app.url(&format!("/companies/{company}/m365?tab=score")))
        .await
        .map_err(e("company M365 tab"))?;
    until(
        c,
        "document.getElementById('score-percent')?.textContent.includes('%') && document.querySelector('svg polyline') && document.querySelectorAll('#controls tbody tr').length >= 10",
        "Secure Score, its history chart and the controls",
    )
    .await?;
    shot(c, "m365-company-score").await?;
    let all = js(
        c,
        "return document.querySelectorAll('#controls tbody tr').length",
    )
    .await?;
    js(
        c,
        "document.querySelector('select[name=severity]').value = 'Critical'; document.querySelector('select[name=severity]').form.submit(); return 1",
    )
    .await?;
    until(
        c,
        "location.search.includes('severity=Critical') && [...document.querySelectorAll('#controls tbody tr')].every(r => r.cells[3].textContent.trim() === 'Critical')",
        "the controls filtered to Critical",
    )
    .await?;
    let critical = js(
        c,
        "return document.querySelectorAll('#controls tbody tr').length",
    )
    .await?;
    check(
        critical.as_u64() < all.as_u64(),
        format!("the severity filter left {critical} of {all} controls"),
    )?;

    c.goto(&app.url(&format!("/companies/{company}/m365?tab=users")))
        .await
        .map_err(e("users tab"))?;
    until(
        c,
        "document.querySelector('#m365-users input[name=user]')",
        "users to select",
    )
    .await?;
    click(c, "#m365-users input[name=user]").await?;
    click(c, "#import-selected").await?;
    until(
        c,
        "document.getElementById('flash')?.textContent.includes('1 imported')",
        "one user imported",
    )
    .await?;
    shot(c, "m365-company-users").await?;

    c.goto(&app.url("/secure-score"))
        .await
        .map_err(e("overview"))?;
    until(
        c,
        "document.querySelectorAll('#scores tbody tr').length === 1",
        "the Secure Score overview's row",
    )
    .await?;
    shot(c, "m365-secure-score").await?;
    Ok(())
}

#[tokio::test]
async fn m365_pages_in_chromium() {
    let Some((_driver, webdriver)) = start_chromedriver().await else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromedriver is not installed (apt-get install chromium chromium-driver)");
        }
        eprintln!(
            "SKIPPED: chromedriver is not on PATH (apt-get install chromium chromium-driver)"
        );
        return;
    };
    use mspbridge_providers::microsoft_365::sandbox as m365;
    let sandbox = m365::M365Sandbox::new(mspbridge_sandbox::Seed::Small);
    let handle = sandbox
        .serve(mspbridge_sandbox::loopback_listener().await.unwrap())
        .unwrap();
    let base = m365::M365Sandbox::base_url(&handle);
    let config = mspbridge_providers::ProviderConfig {
        microsoft_365: mspbridge_providers::microsoft_365::client::GraphSettings {
            login_base: Some(base.clone()),
            graph_base: Some(base),
            ..Default::default()
        },
        ..Default::default()
    };
    let app = TestApp::start_configured(
        mspbridge_store::test_support::sqlite().await.unwrap(),
        false,
        config,
    )
    .await;
    let id = connect_json(
        &app,
        json!({"provider": "microsoft_365", "credentials": {
            "client_id": m365::DEMO_CLIENT_ID, "client_secret": m365::DEMO_CLIENT_SECRET,
            "home_tenant": m365::PARTNER_TENANT_ID}}),
    )
    .await;
    let tenants = sandbox.tenants();
    let mut companies = Vec::new();
    for t in tenants.iter().take(3) {
        let (s, v) = app
            .post(
                "/api/v1/companies",
                &app.a.owner_token,
                json!({"name": t.display_name}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        companies.push(v["id"].as_i64().unwrap());
    }
    let role = app.db.store.list_roles(app.a.id).await.unwrap()[0].id;
    let (s, _) = app
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/companies/{}/default-import-role", companies[0]),
            &app.a.owner_token,
            Some(json!({"default_import_role": role.0})),
        )
        .await;
    assert_eq!(s, 200);
    let c = browser(&webdriver).await;
    let result = m365_pages(&app, &c, id, companies[0], &tenants[0].id).await;
    if let Err(what) = &result {
        let _ = shot(&c, "failed-step-m365").await;
        let _ = c.clone().close().await;
        panic!("{what}");
    }
    let _ = c.close().await;
    handle.stop().await;
}

/// Stripe in the browser: connecting through the wizard, a company's Billing tab after the
/// sync, and a client user of that company signing in at /client and paying an open
/// invoice on the sandbox's hosted invoice page; the webhook brings the payment back.
async fn stripe_pages(
    app: &TestApp,
    c: &Client,
    sandbox: &mspbridge_providers::stripe::sandbox::StripeSandbox,
) -> Step {
    use mspbridge_providers::stripe::sandbox::DEMO_RESTRICTED_KEY;
    sign_in(app, c).await?;
    c.goto(&app.url("/settings/integrations/connect/stripe"))
        .await
        .map_err(e("connect page"))?;
    c.find(Locator::Id("cred_secret_key"))
        .await
        .map_err(e("key field"))?
        .send_keys(DEMO_RESTRICTED_KEY)
        .await
        .map_err(e("key field"))?;
    shot(c, "stripe-connect").await?;
    click(c, "button[type=submit]").await?;
    until(
        c,
        "location.pathname.match(/^\\/settings\\/integrations\\/\\d+/) && document.body.textContent.includes('Test')",
        "the integration's report after Test",
    )
    .await?;
    let list = app.get("/api/v1/integrations", &app.a.owner_token).await.1;
    let id = list
        .as_array()
        .and_then(|l| l.iter().find(|i| i["provider"] == "stripe"))
        .and_then(|i| i["id"].as_i64())
        .ok_or("no Stripe integration after connecting")?;
    check(
        sandbox.endpoints().len() == 1,
        "the webhook endpoint was registered".to_string(),
    )?;
    sync_at(app, id, chrono::Duration::zero()).await;

    // A company linked to a customer with an open invoice.
    let (cus, name) = sandbox
        .customers()
        .into_iter()
        .find(|c| {
            sandbox
                .invoices_of(&c.id)
                .iter()
                .any(|i| i["status"] == "open" && i["hosted_invoice_url"].is_string())
        })
        .map(|c| (c.id, c.name))
        .ok_or("no customer with an open invoice")?;
    let (s, v) = app
        .post(
            "/api/v1/companies",
            &app.a.owner_token,
            json!({"name": name}),
        )
        .await;
    check(s == 201, format!("company: {v}"))?;
    let company = v["id"].as_i64().unwrap_or_default();
    let (s, v) = app
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/company-mapping/{company}/{id}"),
            &app.a.owner_token,
            Some(json!({"external_id": cus})),
        )
        .await;
    check(s == 200, format!("link: {v}"))?;
    let user = company_user(
        app,
        mspbridge_domain::CompanyId(company),
        "Robin",
        mspbridge_domain::model::UserStatus::Active,
    )
    .await;

    c.goto(&app.url(&format!("/companies/{company}")))
        .await
        .map_err(e("company page"))?;
    click(c, "#billing-tab").await?;
    until(
        c,
        "document.querySelectorAll('#open-invoices tbody tr').length >= 1 && document.getElementById('manage-payment-methods')",
        "the Billing tab with its open invoices",
    )
    .await?;
    shot(c, "stripe-company-billing").await?;
    // Give the user a sign-in; the password is shown once.
    js(
        c,
        &format!(
            "document.getElementById('user_id').value = '{}'; return 1",
            user.id.0
        ),
    )
    .await?;
    click(c, "#grant-access").await?;
    until(
        c,
        "document.getElementById('portal-password')?.textContent.includes('password')",
        "the new client password",
    )
    .await?;
    let password = js(
        c,
        "return document.querySelector('#portal-password code').textContent",
    )
    .await?;
    let password = password.as_str().unwrap_or_default().to_string();
    c.goto(&app.url("/billing"))
        .await
        .map_err(e("billing overview"))?;
    until(
        c,
        "document.getElementById('past-due') || document.getElementById('no-rows')",
        "the past-due overview",
    )
    .await?;
    shot(c, "stripe-overview").await?;

    // The client user signs in and pays.
    c.delete_all_cookies().await.map_err(e("sign out"))?;
    c.goto(&app.url("/client/login"))
        .await
        .map_err(e("client login"))?;
    c.find(Locator::Id("email"))
        .await
        .map_err(e("email"))?
        .send_keys(user.email.as_deref().unwrap_or_default())
        .await
        .map_err(e("email"))?;
    c.find(Locator::Id("password"))
        .await
        .map_err(e("password"))?
        .send_keys(&password)
        .await
        .map_err(e("password"))?;
    click(c, "button[type=submit]").await?;
    until(
        c,
        "location.pathname === '/client' && document.querySelectorAll('#open-invoices tbody tr').length >= 1",
        "the client's billing page",
    )
    .await?;
    shot(c, "stripe-client-billing").await?;
    let before = js(
        c,
        "return document.querySelectorAll('#open-invoices tbody tr').length",
    )
    .await?;
    click(c, "#open-invoices a.btn").await?;
    until(
        c,
        "document.getElementById('pay')",
        "Stripe's hosted invoice page",
    )
    .await?;
    shot(c, "stripe-hosted-invoice").await?;
    click(c, "#pay").await?;
    until(
        c,
        "document.body.textContent.includes('Invoice paid')",
        "the invoice paid on Stripe's page",
    )
    .await?;
    c.goto(&app.url("/client"))
        .await
        .map_err(e("back to the portal"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = js(
            c,
            "return document.querySelectorAll('#open-invoices tbody tr').length",
        )
        .await?;
        if now.as_u64() < before.as_u64() {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "the payment never reached the portal ({before} open invoices before, {now} after)"
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        c.refresh().await.map_err(e("refresh"))?;
    }
    shot(c, "stripe-client-paid").await?;
    Ok(())
}

#[tokio::test]
async fn stripe_pages_in_chromium() {
    let Some((_driver, webdriver)) = start_chromedriver().await else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromedriver is not installed (apt-get install chromium chromium-driver)");
        }
        eprintln!(
            "SKIPPED: chromedriver is not on PATH (apt-get install chromium chromium-driver)"
        );
        return;
    };
    use mspbridge_providers::stripe::sandbox::StripeSandbox;
    let sandbox = StripeSandbox::new(mspbridge_sandbox::Seed::Small);
    let handle = sandbox
        .serve(mspbridge_sandbox::loopback_listener().await.unwrap())
        .unwrap();
    let config = mspbridge_providers::ProviderConfig {
        stripe: mspbridge_providers::stripe::client::StripeSettings {
            api_base: Some(StripeSandbox::base_url(&handle)),
            ..Default::default()
        },
        ..Default::default()
    };
    let app = TestApp::start_configured(
        mspbridge_store::test_support::sqlite().await.unwrap(),
        true,
        config,
    )
    .await;
    let c = browser(&webdriver).await;
    let result = stripe_pages(&app, &c, &sandbox).await;
    if let Err(what) = &result {
        let _ = shot(&c, "failed-step-stripe").await;
        let _ = c.clone().close().await;
        panic!("{what}");
    }
    let _ = c.close().await;
    handle.stop().await;
}

/// Bigger Brains in the browser: Premium Training switched on from a company's row menu and
/// off in bulk on Companies, and the course catalogue imported from a file on Training,
/// then searched and filtered by category.
async fn training_pages(app: &TestApp, c: &Client, companies: &[i64]) -> Step {
    sign_in(app, c).await?;
    c.goto(&app.url("/companies"))
        .await
        .map_err(e("companies"))?;
    let first = companies[0];
    click(
        c,
        &format!("tr[data-company='{first}'] details.menu summary"),
    )
    .await?;
    click(c, &format!("tr[data-company='{first}'] button.premium-one")).await?;
    until(
        c,
        &format!("document.querySelector(\"tr[data-company='{first}'] td.training\")?.textContent.includes('Premium')"),
        "the row's Training column showing Premium",
    )
    .await?;
    shot(c, "training-companies").await?;
    click(c, "#select-all").await?;
    click(c, "#bulk-disable").await?;
    until(
        c,
        "[...document.querySelectorAll('td.training')].length > 0 && [...document.querySelectorAll('td.training')].every(t => t.textContent.includes('Standard'))",
        "every company Standard after the bulk Disable",
    )
    .await?;

    // The catalogue, from a file.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/screenshots");
    std::fs::create_dir_all(dir).map_err(e("dir"))?;
    let file = std::fs::canonicalize(dir)
        .map_err(e("dir"))?
        .join("catalogue.csv");
    std::fs::write(
        &file,
        mspbridge_providers::bigger_brains::samples::catalogue_csv(280),
    )
    .map_err(e("catalogue file"))?;
    let file = file.to_string_lossy().to_string();
    c.goto(&app.url("/training")).await.map_err(e("training"))?;
    c.find(Locator::Id("catalogue-file"))
        .await
        .map_err(e("file input"))?
        .send_keys(&file)
        .await
        .map_err(e("file input"))?;
    click(c, "#catalogue-go").await?;
    until(
        c,
        "document.getElementById('catalogue-summary')?.textContent.includes('280 rows read: 280 applied')",
        "the import's report",
    )
    .await?;
    c.goto(&app.url("/training?q=excel"))
        .await
        .map_err(e("search"))?;
    until(
        c,
        "document.querySelectorAll('#courses tbody tr').length > 0 && [...document.querySelectorAll('#courses tbody tr')].every(r => r.textContent.toLowerCase().includes('excel'))",
        "courses found by search",
    )
    .await?;
    shot(c, "training-catalogue").await?;
    js(c, "document.getElementById('category').value = 'Cybersecurity'; document.getElementById('category').form.submit(); return 1").await?;
    until(
        c,
        "location.search.includes('category=Cybersecurity') && [...document.querySelectorAll('#courses tbody tr')].every(r => r.cells[1].textContent === 'Cybersecurity')",
        "the category filter",
    )
    .await?;
    c.goto(&app.url(&format!("/companies/{first}/training")))
        .await
        .map_err(e("company training"))?;
    until(
        c,
        "document.getElementById('training-settings')",
        "the company's training page",
    )
    .await?;
    shot(c, "training-company").await?;
    Ok(())
}

#[tokio::test]
async fn training_pages_in_chromium() {
    let Some((_driver, webdriver)) = start_chromedriver().await else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromedriver is not installed (apt-get install chromium chromium-driver)");
        }
        eprintln!(
            "SKIPPED: chromedriver is not on PATH (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let app = TestApp::start(mspbridge_store::test_support::sqlite().await.unwrap()).await;
    connect_json(
        &app,
        json!({"provider": "bigger_brains", "credentials": {"reseller_name": "Demo MSP", "brainstation_url": "https://getbiggerbrains.com"}}),
    )
    .await;
    let mut companies = Vec::new();
    for name in ["Alpha Dental", "Beta Legal"] {
        let (s, v) = app
            .post(
                "/api/v1/companies",
                &app.a.owner_token,
                json!({"name": name}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        companies.push(v["id"].as_i64().unwrap());
    }
    let c = browser(&webdriver).await;
    let result = training_pages(&app, &c, &companies).await;
    if let Err(what) = &result {
        let _ = shot(&c, "failed-step-training").await;
        let _ = c.clone().close().await;
        panic!("{what}");
    }
    let _ = c.close().await;
}
