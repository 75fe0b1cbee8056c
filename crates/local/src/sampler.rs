//! Choosing each next token: repetition penalties, then top-k / top-p / temperature (or greedy),
//! with a grammar checked lazily.
//!
//! A grammar over the whole vocabulary costs a parse-stack walk per token per step (the judge's
//! JSON took seconds this way). As llama.cpp's own common sampler does, the token is first chosen
//! without the grammar and only that one token is checked against it; the grammar filters the
//! whole vocabulary only when the choice is rejected. The output is the same grammar-valid text.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use quorate_providers::Error;

use crate::engine::Params;

/// How many recent tokens the repetition penalties look at (llama.cpp's default).
const PENALTY_WINDOW: i32 = 64;

pub struct Sampler {
    chain: LlamaSampler,
    grammar: Option<LlamaSampler>,
    /// The candidate list, kept between steps so a step does not allocate a vocabulary's worth.
    scratch: Vec<LlamaTokenData>,
}

impl Sampler {
    pub fn new(model: &LlamaModel, p: &Params) -> Result<Self, Error> {
        let grammar = match &p.grammar {
            Some(g) => Some(LlamaSampler::grammar(model, g, "root").map_err(|e| {
                Error::BadRequest(format!("response_format: the grammar did not compile: {e}"))
            })?),
            None => None,
        };
        let mut chain = Vec::new();
        if p.penalties.any() {
            chain.push(LlamaSampler::penalties(
                model.n_vocab(),
                PENALTY_WINDOW,
                p.penalties.repetition,
                p.penalties.frequency,
                p.penalties.presence,
            ));
        }
        if p.temperature <= 0.0 {
            chain.push(LlamaSampler::greedy());
        } else {
            chain.push(LlamaSampler::top_k(p.top_k));
            chain.push(LlamaSampler::top_p(p.top_p, 1));
            chain.push(LlamaSampler::temp(p.temperature));
            chain.push(LlamaSampler::dist(p.seed));
        }
        Ok(Self {
            chain: LlamaSampler::chain_simple(chain),
            grammar,
            scratch: Vec::new(),
        })
    }

    /// The next token from this step's logits; `None` only if every token was ruled out.
    pub fn sample(&mut self, logits: &[f32]) -> Option<LlamaToken> {
        let token = self.pick(logits, false)?;
        if self.allowed(token, logits) {
            return Some(token);
        }
        // Accepting a token the grammar rejects would abort inside llama.cpp: check again.
        self.pick(logits, true)
            .filter(|&token| self.allowed(token, logits))
    }

    /// Records a token that is part of the output (penalty history, grammar state).
    pub fn accept(&mut self, token: LlamaToken) {
        if let Some(grammar) = &mut self.grammar {
            grammar.accept(token);
        }
        self.chain.accept(token);
    }

    fn pick(&mut self, logits: &[f32], with_grammar: bool) -> Option<LlamaToken> {
        let mut data = std::mem::take(&mut self.scratch);
        data.clear();
        data.extend(
            (0_i32..)
                .zip(logits)
                .map(|(id, &logit)| LlamaTokenData::new(LlamaToken::new(id), logit, 0.0)),
        );
        let mut candidates = LlamaTokenDataArray::new(data, false);
        if with_grammar {
            if let Some(grammar) = &mut self.grammar {
                grammar.apply(&mut candidates);
            }
        }
        self.chain.apply(&mut candidates);
        let token = candidates.selected_token();
        self.scratch = candidates.data;
        token
    }

    /// Whether the grammar (if any) lets `token` come next.
    fn allowed(&mut self, token: LlamaToken, logits: &[f32]) -> bool {
        let Some(grammar) = &mut self.grammar else {
            return true;
        };
        let logit = usize::try_from(token.0)
            .ok()
            .and_then(|i| logits.get(i))
            .copied()
            .unwrap_or(0.0);
        let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, logit, 0.0)], false);
        grammar.apply(&mut one);
        one.data.first().is_some_and(|t| t.logit().is_finite())
    }
}
