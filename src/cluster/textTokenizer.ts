// Text input: the model folder's tokenizer.json (and tokenizer_config.json when present), read with
// @huggingface/tokenizers, the maintained pure-JS port of Hugging Face's tokenizers.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';

export interface TextTokenizer {
  /** Token ids as transformers' `tokenizer(text)` gives them (special tokens added, e.g. BOS). */
  encode(text: string): number[];
}

/** The model's tokenizer, or null when the folder has no tokenizer.json. */
export function loadTextTokenizer(modelDir: string): TextTokenizer | null {
  const tokenizerPath = path.join(modelDir, 'tokenizer.json');
  if (!fs.existsSync(tokenizerPath)) return null;
  const tokenizerJson: object = JSON.parse(fs.readFileSync(tokenizerPath, 'utf8'));
  const configPath = path.join(modelDir, 'tokenizer_config.json');
  const config: object = fs.existsSync(configPath) ? JSON.parse(fs.readFileSync(configPath, 'utf8')) : {};
  const tokenizer = new Tokenizer(tokenizerJson, config);
  return { encode: (text) => tokenizer.encode(text).ids };
}
