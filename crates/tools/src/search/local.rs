//! The `local` backend: a tantivy full-text index over the user's own documents (markdown, text,
//! HTML), built with `quorate index add DIR`. Results point at `file://` URLs.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::QueryParser;
use tantivy::schema::{Field, Schema, Value, STORED, STRING, TEXT};
use tantivy::snippet::SnippetGenerator;
use tantivy::{doc, Index, IndexWriter, TantivyDocument, Term};

use super::{Search, SearchError, SearchResult};
use crate::html;

/// Files larger than this are skipped: an index of notes, not of data dumps.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
const SNIPPET_CHARS: usize = 240;

#[derive(Clone)]
pub struct LocalIndex {
    index: Index,
    fields: Fields,
}

#[derive(Clone, Copy)]
struct Fields {
    url: Field,
    title: Field,
    body: Field,
    date: Field,
}

/// What `add` did.
#[derive(Debug, Default, PartialEq)]
pub struct Added {
    pub indexed: usize,
    pub skipped: usize,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let fields = Fields {
        url: builder.add_text_field("url", STRING | STORED),
        title: builder.add_text_field("title", TEXT | STORED),
        body: builder.add_text_field("body", TEXT | STORED),
        date: builder.add_text_field("date", STORED),
    };
    (builder.build(), fields)
}

fn backend_error(e: impl std::fmt::Display) -> SearchError {
    SearchError::Backend {
        backend: "local".into(),
        message: e.to_string(),
    }
}

impl LocalIndex {
    /// Opens the index in `dir`, creating it (and the folder) if needed.
    pub fn open(dir: &Path) -> Result<Self, SearchError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| backend_error(format!("{}: {e}", dir.display())))?;
        let (schema, fields) = schema();
        let directory = MmapDirectory::open(dir).map_err(backend_error)?;
        let index = Index::open_or_create(directory, schema).map_err(backend_error)?;
        Ok(Self { index, fields })
    }

    /// Whether the index holds any document.
    pub fn is_empty(&self) -> bool {
        self.index
            .reader()
            .map(|r| r.searcher().num_docs() == 0)
            .unwrap_or(true)
    }

    /// Indexes every markdown, text and HTML file under `root`; a file indexed before is replaced.
    pub fn add(&self, root: &Path) -> Result<Added, SearchError> {
        let mut writer: IndexWriter = self.index.writer(50_000_000).map_err(backend_error)?;
        let mut added = Added::default();
        for path in files(root).map_err(backend_error)? {
            match self.document(&path) {
                Some(document) => {
                    let url = url_of(&path);
                    writer.delete_term(Term::from_field_text(self.fields.url, &url));
                    writer.add_document(document).map_err(backend_error)?;
                    added.indexed += 1;
                }
                None => added.skipped += 1,
            }
        }
        writer.commit().map_err(backend_error)?;
        Ok(added)
    }

    fn document(&self, path: &Path) -> Option<TantivyDocument> {
        let meta = std::fs::metadata(path).ok()?;
        if meta.len() > MAX_FILE_BYTES {
            return None;
        }
        let raw = std::fs::read_to_string(path).ok()?;
        let is_html = matches!(extension(path).as_str(), "html" | "htm");
        let (title, body) = if is_html {
            let page = html::extract(&raw);
            (page.title, page.markdown)
        } else {
            (first_heading(&raw), raw)
        };
        let title = title.unwrap_or_else(|| file_name(path));
        let date = meta.modified().ok().map(iso_date).unwrap_or_default();
        Some(doc!(
            self.fields.url => url_of(path),
            self.fields.title => title,
            self.fields.body => body,
            self.fields.date => date,
        ))
    }

    /// The indexed text of the document at `url` (a `file://` URL from a search result), as
    /// `(title, body)`. Only indexed documents are readable this way, not arbitrary files.
    pub fn read(&self, url: &str) -> Result<Option<(String, String)>, SearchError> {
        let reader = self.index.reader().map_err(backend_error)?;
        let searcher = reader.searcher();
        let query = tantivy::query::TermQuery::new(
            Term::from_field_text(self.fields.url, url),
            tantivy::schema::IndexRecordOption::Basic,
        );
        let top = searcher
            .search(&query, &TopDocs::with_limit(1).order_by_score())
            .map_err(backend_error)?;
        let Some((_, address)) = top.first() else {
            return Ok(None);
        };
        let doc: TantivyDocument = searcher.doc(*address).map_err(backend_error)?;
        let text = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        Ok(Some((text(self.fields.title), text(self.fields.body))))
    }

    /// Best matches for `query` (any syntax error in it is forgiven: words are searched).
    pub fn search_now(
        &self,
        query: &str,
        max_results: usize,
    ) -> Result<Vec<SearchResult>, SearchError> {
        let reader = self.index.reader().map_err(backend_error)?;
        let searcher = reader.searcher();
        let parser = QueryParser::for_index(&self.index, vec![self.fields.title, self.fields.body]);
        let (query, _) = parser.parse_query_lenient(query);
        let top = searcher
            .search(
                &query,
                &TopDocs::with_limit(max_results.max(1)).order_by_score(),
            )
            .map_err(backend_error)?;
        let mut snippets = SnippetGenerator::create(&searcher, &*query, self.fields.body)
            .map_err(backend_error)?;
        snippets.set_max_num_chars(SNIPPET_CHARS);
        let text = |doc: &TantivyDocument, field| {
            doc.get_first(field)
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        top.into_iter()
            .map(|(_, address)| {
                let doc: TantivyDocument = searcher.doc(address).map_err(backend_error)?;
                let snippet = snippets.snippet_from_doc(&doc);
                let date = text(&doc, self.fields.date);
                Ok(SearchResult {
                    url: text(&doc, self.fields.url),
                    title: text(&doc, self.fields.title),
                    snippet: snippet
                        .fragment()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" "),
                    date: (!date.is_empty()).then_some(date),
                })
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Search for LocalIndex {
    fn name(&self) -> &str {
        "local"
    }

    async fn search(
        &self,
        query: &str,
        max_results: usize,
    ) -> Result<Vec<SearchResult>, SearchError> {
        let (index, query) = (self.clone(), query.to_string());
        tokio::task::spawn_blocking(move || index.search_now(&query, max_results))
            .await
            .map_err(backend_error)?
    }
}

/// The indexable files under `root` (or `root` itself), in a stable order.
fn files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::metadata(&path)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                let entry = entry?.path();
                let hidden = entry
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'));
                if !hidden {
                    pending.push(entry);
                }
            }
        } else if matches!(
            extension(&path).as_str(),
            "md" | "markdown" | "txt" | "html" | "htm"
        ) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn url_of(path: &Path) -> String {
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    url::Url::from_file_path(&absolute)
        .map(|u| u.to_string())
        .unwrap_or_else(|()| format!("file://{}", absolute.display()))
}

/// A markdown file's first `#` heading.
fn first_heading(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix('#'))
        .map(|h| h.trim_start_matches('#').trim().to_string())
        .filter(|h| !h.is_empty())
}

/// A file time as a UTC date (YYYY-MM-DD), computed without a date library.
fn iso_date(time: SystemTime) -> String {
    let seconds = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    quorate_api::time::iso_date(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("quorate-index-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn finds_the_right_document_and_replaces_on_reindex() {
        let docs = temp("docs");
        std::fs::write(docs.join("lighthouse.md"), "# Lindesnes lighthouse\n\nThe oldest lighthouse in Norway, lit in 1656 at the southern tip.").unwrap();
        std::fs::write(
            docs.join("bread.txt"),
            "Sourdough bread needs a starter, flour, water and salt.",
        )
        .unwrap();
        std::fs::write(docs.join("page.html"), "<html><head><title>Fjords</title></head><body><nav>menu</nav><main><p>Geirangerfjord is a UNESCO site.</p></main></body></html>").unwrap();
        std::fs::write(docs.join("data.bin"), [0u8, 1, 2]).unwrap();
        let index = LocalIndex::open(&temp("index")).unwrap();
        assert!(index.is_empty());
        let added = index.add(&docs).unwrap();
        assert_eq!(
            added,
            Added {
                indexed: 3,
                skipped: 0
            }
        );

        let hits = index.search("oldest lighthouse Norway", 5).await.unwrap();
        assert!(hits[0].url.ends_with("/lighthouse.md"), "{hits:?}");
        assert_eq!(hits[0].title, "Lindesnes lighthouse");
        assert!(hits[0].snippet.contains("1656"), "{}", hits[0].snippet);
        assert!(hits[0]
            .date
            .as_deref()
            .is_some_and(|d| d.len() == 10 && d.starts_with("20")));
        let (title, body) = index.read(&hits[0].url).unwrap().unwrap();
        assert_eq!(title, "Lindesnes lighthouse");
        assert!(body.contains("southern tip"), "{body}");
        assert!(index.read("file:///etc/passwd").unwrap().is_none());
        let hits = index.search("UNESCO", 5).await.unwrap();
        assert_eq!((hits.len(), hits[0].title.as_str()), (1, "Fjords"));
        assert!(
            index.search("menu", 5).await.unwrap().is_empty(),
            "boilerplate is not indexed"
        );
        assert!(
            index.search("sourdough AND (", 5).await.is_ok(),
            "bad syntax is forgiven"
        );

        std::fs::write(docs.join("bread.txt"), "Rye bread is dense.").unwrap();
        index.add(&docs).unwrap();
        assert!(
            index.search("sourdough", 5).await.unwrap().is_empty(),
            "the old version is gone"
        );
        assert_eq!(index.search("rye", 5).await.unwrap().len(), 1);
    }

    #[test]
    fn dates_are_civil() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(iso_date(t), "2023-11-14");
    }
}
