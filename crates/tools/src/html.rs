//! HTML to the page's main text as markdown: boilerplate (navigation, headers, footers, sidebars,
//! scripts, forms) dropped, `<main>` or `<article>` preferred over the whole body.

use ego_tree::NodeRef;
use scraper::{Html, Node, Selector};

/// Elements that are never main content.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "nav", "header", "footer", "aside", "form", "svg", "iframe",
    "template", "button", "select", "dialog",
];
/// ARIA roles of boilerplate regions.
const SKIPPED_ROLES: &[&str] = &[
    "navigation",
    "banner",
    "contentinfo",
    "complementary",
    "search",
];

pub struct Extract {
    pub title: Option<String>,
    pub markdown: String,
}

pub fn extract(html: &str) -> Extract {
    let document = Html::parse_document(html);
    let title = first_text(&document, "title").or_else(|| first_text(&document, "h1"));
    let root = ["main", "article", "[role=main]", "body"]
        .iter()
        .filter_map(|s| Selector::parse(s).ok())
        .find_map(|s| document.select(&s).next().map(|e| *e));
    let mut out = String::new();
    match root {
        Some(node) => walk(node, &mut out),
        None => walk(document.tree.root(), &mut out),
    }
    Extract {
        title,
        markdown: tidy(&out),
    }
}

fn first_text(document: &Html, selector: &str) -> Option<String> {
    let selector = Selector::parse(selector).ok()?;
    let element = document.select(&selector).next()?;
    let text = collapse(&element.text().collect::<String>());
    (!text.is_empty()).then_some(text)
}

fn walk(node: NodeRef<'_, Node>, out: &mut String) {
    match node.value() {
        Node::Text(text) => out.push_str(&collapse_keep_edges(text)),
        Node::Element(element) => {
            let name = element.name();
            let role = element.attr("role").unwrap_or_default();
            if SKIPPED.contains(&name)
                || SKIPPED_ROLES.contains(&role)
                || element.attr("hidden").is_some()
            {
                return;
            }
            let (before, after) = wrap(name);
            if name == "a" {
                let href = element.attr("href").filter(|h| h.starts_with("http"));
                let mut inner = String::new();
                children(node, &mut inner);
                let inner = collapse(&inner);
                match href {
                    Some(href) if !inner.is_empty() => out.push_str(&format!("[{inner}]({href})")),
                    _ => out.push_str(&inner),
                }
                return;
            }
            out.push_str(before);
            children(node, out);
            out.push_str(after);
        }
        _ => children(node, out),
    }
}

fn children(node: NodeRef<'_, Node>, out: &mut String) {
    for child in node.children() {
        walk(child, out);
    }
}

/// Markdown around an element's content.
fn wrap(name: &str) -> (&'static str, &'static str) {
    match name {
        "h1" => ("\n\n# ", "\n\n"),
        "h2" => ("\n\n## ", "\n\n"),
        "h3" => ("\n\n### ", "\n\n"),
        "h4" | "h5" | "h6" => ("\n\n#### ", "\n\n"),
        "p" | "div" | "section" | "table" | "ul" | "ol" | "blockquote" | "figure" => {
            ("\n\n", "\n\n")
        }
        "li" => ("\n- ", ""),
        "tr" => ("\n", ""),
        "td" | "th" => (" | ", ""),
        "br" => ("\n", ""),
        "pre" => ("\n\n```\n", "\n```\n\n"),
        "code" => ("`", "`"),
        "strong" | "b" => ("**", "**"),
        "em" | "i" => ("*", "*"),
        _ => ("", ""),
    }
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Collapses runs of whitespace to one space, keeping one at either end if there was any.
fn collapse_keep_edges(text: &str) -> String {
    let inner = collapse(text);
    if inner.is_empty() {
        return if text.is_empty() {
            String::new()
        } else {
            " ".into()
        };
    }
    let lead = if text.starts_with(char::is_whitespace) {
        " "
    } else {
        ""
    };
    let trail = if text.ends_with(char::is_whitespace) {
        " "
    } else {
        ""
    };
    format!("{lead}{inner}{trail}")
}

/// Trims every line and keeps at most one blank line between blocks.
fn tidy(text: &str) -> String {
    let mut out = String::new();
    let mut blank = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            blank = !out.is_empty();
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank { "\n\n" } else { "\n" });
        }
        out.push_str(line);
        blank = false;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_article_and_drops_boilerplate() {
        let page = r#"<html><head><title>Lighthouses</title><script>var x=1;</script></head><body>
            <header><nav><a href="https://x.test/">Home</a> | Menu</nav></header>
            <main><h1>Lighthouses  of   Norway</h1>
              <p>There are <b>many</b> lighthouses. See <a href="https://kystverket.no">the agency</a>.</p>
              <ul><li>Lindesnes</li><li>Svenner</li></ul>
              <div role="navigation">Prev | Next</div>
            </main>
            <aside>Buy our book</aside><footer>© 2026</footer></body></html>"#;
        let e = extract(page);
        assert_eq!(e.title.as_deref(), Some("Lighthouses"));
        let md = &e.markdown;
        assert!(md.starts_with("# Lighthouses of Norway"), "{md}");
        assert!(
            md.contains("There are **many** lighthouses. See [the agency](https://kystverket.no)."),
            "{md}"
        );
        assert!(md.contains("- Lindesnes\n- Svenner"), "{md}");
        for boilerplate in ["Menu", "Buy our book", "2026", "Prev", "var x"] {
            assert!(!md.contains(boilerplate), "{boilerplate} leaked: {md}");
        }
    }

    #[test]
    fn falls_back_to_the_body() {
        let e = extract("<p>Just text</p>");
        assert_eq!(e.markdown, "Just text");
        assert_eq!(e.title, None);
    }
}
