//! Choosing each next token: repetition penalties, then top-k / top-p / temperature (or greedy),
//! with a grammar checked lazily.
//!
//! A grammar over the whole vocabulary costs a parse-stack walk per token per step (the judge's
//! JSON took seconds this way). As llama.cpp's own common sampler does, the token is first chosen
//! without the grammar and only that one token is checked against it. When the grammar rejects
//! it, the grammar filters the best few candidates and, only if too few of them pass, the whole
//! vocabulary. Either way the choice is the one a grammar-first chain would make.

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
    penalties: Option<LlamaSampler>,
    /// top-k / top-p / temperature / draw, or greedy.
    chain: LlamaSampler,
    grammar: Option<LlamaSampler>,
    /// How many allowed candidates the chain needs to choose as it would from the whole
    /// vocabulary: 1 for greedy, top-k otherwise.
    need: usize,
    /// The candidate list, kept between steps so a step does not allocate a vocabulary's worth.
    scratch: Vec<LlamaTokenData>,
    /// Tokens the grammar rejected (each then costs a second pass).
    pub resampled: usize,
}

impl Sampler {
    pub fn new(model: &LlamaModel, p: &Params) -> Result<Self, Error> {
        let grammar = match &p.grammar {
            Some(g) => Some(LlamaSampler::grammar(model, g, "root").map_err(|e| {
                Error::BadRequest(format!("response_format: the grammar did not compile: {e}"))
            })?),
            None => None,
        };
        let penalties = p.penalties.any().then(|| {
            LlamaSampler::penalties(
                model.n_vocab(),
                PENALTY_WINDOW,
                p.penalties.repetition,
                p.penalties.frequency,
                p.penalties.presence,
            )
        });
        let (chain, need) = if p.temperature <= 0.0 {
            (LlamaSampler::greedy(), 1)
        } else {
            let chain = LlamaSampler::chain_simple([
                LlamaSampler::top_k(p.top_k),
                LlamaSampler::top_p(p.top_p, 1),
                LlamaSampler::temp(p.temperature),
                LlamaSampler::dist(p.seed),
            ]);
            (chain, p.top_k.max(1) as usize)
        };
        Ok(Self {
            penalties,
            chain,
            grammar,
            need,
            scratch: Vec::new(),
            resampled: 0,
        })
    }

    /// The next token from this step's logits; `None` only if the grammar allows none.
    pub fn sample(&mut self, logits: &[f32]) -> Option<LlamaToken> {
        let mut candidates = self.candidates(logits);
        self.chain.apply(&mut candidates);
        let token = candidates.selected_token();
        self.scratch = candidates.data;
        let token = token?;
        if self.allowed(token, logits) {
            return Some(token);
        }
        self.resampled += 1;
        self.pick_allowed(logits)
    }

    /// Records a token that is part of the output (penalty history, grammar state).
    pub fn accept(&mut self, token: LlamaToken) {
        if let Some(grammar) = &mut self.grammar {
            grammar.accept(token);
        }
        if let Some(penalties) = &mut self.penalties {
            penalties.accept(token);
        }
        self.chain.accept(token);
    }

    /// Every token with its logit, after the repetition penalties.
    fn candidates(&mut self, logits: &[f32]) -> LlamaTokenDataArray {
        let mut data = std::mem::take(&mut self.scratch);
        data.clear();
        data.extend(
            (0_i32..)
                .zip(logits)
                .map(|(id, &logit)| LlamaTokenData::new(LlamaToken::new(id), logit, 0.0)),
        );
        let mut candidates = LlamaTokenDataArray::new(data, false);
        if let Some(penalties) = &mut self.penalties {
            penalties.apply(&mut candidates);
        }
        candidates
    }

    /// The chain's choice among the tokens the grammar allows. The grammar is first run over
    /// the best candidates only: if enough of them pass, they are exactly the ones the chain
    /// would keep from the whole vocabulary (the best allowed ones), at a fraction of the cost.
    fn pick_allowed(&mut self, logits: &[f32]) -> Option<LlamaToken> {
        let mut candidates = self.candidates(logits);
        let best = (self.need * 4).max(64).min(candidates.data.len());
        if best < candidates.data.len() {
            candidates
                .data
                .select_nth_unstable_by(best, |a, b| b.logit().total_cmp(&a.logit()));
        }
        let mut top = LlamaTokenDataArray::new(candidates.data[..best].to_vec(), false);
        self.grammar.as_mut()?.apply(&mut top);
        top.data.retain(|t| t.logit().is_finite());
        if top.data.len() < self.need {
            // Too few of the best pass: filter the whole vocabulary.
            top = self.candidates(logits);
            if let Some(grammar) = &mut self.grammar {
                grammar.apply(&mut top);
            }
        } else {
            self.scratch = candidates.data;
        }
        self.chain.apply(&mut top);
        let token = top.selected_token()?;
        // Accepting a token the grammar rejects would abort inside llama.cpp: check again.
        self.allowed(token, logits).then_some(token)
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
