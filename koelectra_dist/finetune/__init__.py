"""Downstream evaluation: fine-tune an exported discriminator (or any Hugging Face ELECTRA/BERT folder)
on KoELECTRA's tasks; `stage.run(cfg)` is the pipeline's finetune stage."""
